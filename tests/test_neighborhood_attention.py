"""segkit's neighborhood attention against legacy NATTEN's outputs and a brute-force reference of its semantics."""

import json
from pathlib import Path

import pytest
import torch

from conftest import reference_av, reference_qk, window_keys
from segkit.ops import na2d, na2d_av, na2d_qk_rpb


def random_case(seed, batch, heads, height, width, dim, kernel_size, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, height, width, dim, generator=generator, dtype=dtype) for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel_size - 1, 2 * kernel_size - 1, generator=generator, dtype=dtype)
    return q, k, v, rpb


# ---------------------------------------------------------------- legacy NATTEN fixtures

OP_CASES = json.loads((Path(__file__).parent / "fixtures" / "dinat" / "op" / "cases.json").read_text())


@pytest.mark.parametrize("case", OP_CASES, ids=lambda case: case["name"])
def test_matches_legacy_natten(case, fixtures_dir):
    from safetensors.torch import load_file

    t = load_file(fixtures_dir / "dinat" / case["file"])
    k, d = case["kernel_size"], case["dilation"]
    tol = 1e-12 if case["dtype"] == "float64" else 1e-5
    torch.testing.assert_close(na2d_qk_rpb(t["query"], t["key"], t["rpb"], k, d), t["attn"], atol=tol, rtol=tol)
    torch.testing.assert_close(na2d_av(t["probs"], t["value"], k, d), t["out"], atol=tol, rtol=tol)
    torch.testing.assert_close(na2d(t["query"], t["key"], t["value"], t["rpb"], k, d), t["out"], atol=tol, rtol=tol)


def test_fixture_cases_are_present():
    assert len(OP_CASES) >= 10


# ---------------------------------------------------------------- brute force, other shapes

SHAPES = [  # kernel, dilation, extra rows, extra cols (beyond K*d): divisible and not, square and not,
    # maps of one tile and of many (with a last tile too short to reach back to its windows)
    (3, 1, 0, 9), (3, 4, 3, 1), (5, 1, 12, 3), (5, 1, 21, 30), (5, 3, 2, 7), (7, 2, 1, 0), (7, 1, 17, 22),
    (9, 2, 5, 3), (11, 1, 9, 0), (11, 1, 30, 27), (11, 2, 3, 6), (11, 5, 0, 4), (13, 1, 2, 30), (1, 3, 2, 1),
]


@pytest.mark.parametrize("kernel_size,dilation,extra_h,extra_w", SHAPES)
def test_matches_brute_force(kernel_size, dilation, extra_h, extra_w):
    height, width = kernel_size * dilation + extra_h, kernel_size * dilation + extra_w
    q, k, v, rpb = random_case(kernel_size * 100 + dilation, 2, 3, height, width, 5, kernel_size)
    attn = reference_qk(q, k, rpb, kernel_size, dilation)
    probs = attn.softmax(-1)
    out = reference_av(probs, v, kernel_size, dilation)

    torch.testing.assert_close(na2d_qk_rpb(q, k, rpb, kernel_size, dilation), attn, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(na2d_av(probs, v, kernel_size, dilation), out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(na2d(q, k, v, rpb, kernel_size, dilation), out, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kernel_size", [3, 7, 11])
def test_every_axis_length_up_to_many_tiles(kernel_size):
    """Tile sizes, short last tiles and border windows spilling into the previous tile: all lengths in a range."""
    for length in range(kernel_size, kernel_size + 48):
        q, k, v, rpb = random_case(length, 1, 1, length, kernel_size + 1, 2, kernel_size)
        attn = reference_qk(q, k, rpb, kernel_size, 1)
        out = reference_av(attn.softmax(-1), v, kernel_size, 1)
        torch.testing.assert_close(na2d_qk_rpb(q, k, rpb, kernel_size, 1), attn, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(na2d(q, k, v, rpb, kernel_size, 1), out, atol=1e-12, rtol=1e-12)
        transposed = [x.transpose(2, 3) for x in (q, k, v)]
        torch.testing.assert_close(na2d(*transposed, rpb.transpose(1, 2), kernel_size, 1), out.transpose(2, 3),
                                   atol=1e-12, rtol=1e-12)


def test_without_bias_matches_brute_force():
    q, k, v, _ = random_case(5, 1, 2, 17, 12, 4, 5)
    attn = reference_qk(q, k, None, 5, 2)
    torch.testing.assert_close(na2d_qk_rpb(q, k, None, 5, 2), attn, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(na2d(q, k, v, None, 5, 2), reference_av(attn.softmax(-1), v, 5, 2),
                               atol=1e-12, rtol=1e-12)


def test_large_map_single_tile_groups_and_float32():
    """A DiNAT-like case: a dilation so large that each group is barely one window, float32."""
    q, k, v, rpb = random_case(9, 1, 2, 24, 31, 8, 3, dtype=torch.float32)
    out = reference_av(reference_qk(q, k, rpb, 3, 7).softmax(-1), v, 3, 7)
    torch.testing.assert_close(na2d(q, k, v, rpb, 3, 7), out, atol=1e-5, rtol=1e-5)


def test_strided_inputs_give_the_same_result():
    """DiNAT hands over permuted (non-contiguous) views; results must not depend on memory layout."""
    q, k, v, rpb = random_case(3, 2, 3, 15, 14, 4, 5)
    views = [x.permute(0, 2, 3, 1, 4).contiguous().permute(0, 3, 1, 2, 4) for x in (q, k, v)]
    assert not views[0].is_contiguous()
    torch.testing.assert_close(na2d(*views, rpb, 5, 2), na2d(q, k, v, rpb, 5, 2), atol=1e-14, rtol=0)
    torch.testing.assert_close(na2d_qk_rpb(views[0], views[1], rpb, 5, 2), na2d_qk_rpb(q, k, rpb, 5, 2),
                               atol=1e-14, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
def test_half_precision(dtype, tol):
    q, k, v, rpb = random_case(4, 1, 2, 16, 19, 8, 5)
    q, k, v, rpb = (x.to(dtype) for x in (q, k, v, rpb))
    exact = [x.double() for x in (q, k, v, rpb)]  # same rounded inputs, exact arithmetic
    attn = reference_qk(exact[0], exact[1], exact[3], 5, 3)
    probs = attn.softmax(-1).to(dtype)
    out = reference_av(attn.softmax(-1), exact[2], 5, 3)

    result = na2d_qk_rpb(q, k, rpb, 5, 3)
    assert result.dtype == dtype
    torch.testing.assert_close(result.double(), attn, atol=tol * attn.abs().max().item(), rtol=tol)
    torch.testing.assert_close(na2d_av(probs, v, 5, 3).double(), out, atol=tol, rtol=tol)
    torch.testing.assert_close(na2d(q, k, v, rpb, 5, 3).double(), out, atol=tol, rtol=tol)


def test_large_map_memory_stays_bounded():
    """A 1024x1024 map: an (H*W)^2 score matrix would need terabytes. Spot-check queries at corners and middle."""
    q, k, v, rpb = random_case(6, 1, 1, 1024, 1024, 2, 3, dtype=torch.float32)
    out = na2d(q, k, v, rpb, 3, 2)
    row_keys, row_bias = window_keys(1024, 3, 2)
    col_keys, col_bias = window_keys(1024, 3, 2)
    for row, col in [(0, 0), (1, 1023), (512, 511), (1023, 2), (1022, 1021)]:
        keys = row_keys[row][:, None], col_keys[col][None, :]
        scores = (k[0, 0][keys] * q[0, 0, row, col]).sum(-1) + rpb[0][row_bias[row][:, None], col_bias[col][None, :]]
        expected = (scores.flatten().softmax(0)[:, None] * v[0, 0][keys].flatten(0, 1)).sum(0)
        torch.testing.assert_close(out[0, 0, row, col], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    q, k, v, rpb = random_case(8, 2, 4, 40, 37, 32, 11, dtype=torch.float32)
    expected = na2d(q, k, v, rpb, 11, 3)
    result = na2d(*(x.cuda().to(dtype) for x in (q, k, v, rpb)), 11, 3)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(result.float().cpu(), expected, atol=tol, rtol=tol)


# ---------------------------------------------------------------- errors

def test_rejects_maps_smaller_than_the_dilated_window():
    q, k, v, rpb = random_case(0, 1, 1, 10, 30, 4, 5)
    with pytest.raises(ValueError, match="smaller than kernel_size \\* dilation"):
        na2d(q, k, v, rpb, 5, 3)


@pytest.mark.parametrize("kernel_size", [0, 4])
def test_rejects_even_kernels(kernel_size):
    q, k, v, rpb = random_case(0, 1, 1, 10, 10, 4, 5)
    with pytest.raises(ValueError, match="odd"):
        na2d_qk_rpb(q, k, rpb, kernel_size, 1)


def test_rejects_mismatched_shapes():
    q, k, v, rpb = random_case(0, 1, 2, 10, 10, 4, 5)
    with pytest.raises(ValueError, match="rpb has shape"):
        na2d_qk_rpb(q, k, rpb[:1], 5, 1)
    with pytest.raises(ValueError, match="attn has shape"):
        na2d_av(torch.zeros(1, 2, 10, 10, 9, dtype=q.dtype), v, 5, 1)
    with pytest.raises(ValueError, match="key has shape"):
        na2d(q, k[..., :3], v, rpb, 5, 1)
