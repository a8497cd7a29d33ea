"""The one place where transformers' DiNAT is made to run on segkit's neighborhood attention, without NATTEN.

transformers' DiNAT (used as OneFormer's DiNAT-L backbone) cannot run as shipped:

* it calls NATTEN's ``natten2dqkrpb`` / ``natten2dav``, which NATTEN >= 0.20 removed and older NATTEN has no wheels
  for on current PyTorch (nor on Windows or macOS);
* from transformers 4.54 its ``NeighborhoodAttention.forward`` hands q/k/v over as ``(B, W, H, heads, d)`` instead
  of ``(B, heads, H, W, d)``, so even a drop-in NA function would compute the wrong thing;
* ``DinatModel``, ``DinatBackbone`` and ``DinatForImageClassification`` refuse to be built without a natten package.

``patch_transformers_dinat()`` therefore replaces the whole ``NeighborhoodAttention.forward`` with the layout
transformers <= 4.53 used, running on :mod:`segkit.ops`, and lets the natten check pass. Everything else is
transformers' own code, so checkpoints load unchanged.
"""

from __future__ import annotations

import functools
import math

from ...errors import SegkitError
from ...ops import na2d, na2d_av, na2d_qk_rpb


def patch_transformers_dinat() -> None:
    """Make transformers' DiNAT classes build and run on segkit's attention. Idempotent; call before building."""
    modeling_dinat = _import_modeling_dinat()
    attention = modeling_dinat.NeighborhoodAttention
    if attention.forward is neighborhood_attention_forward:
        return
    attention.forward = neighborhood_attention_forward
    modeling_dinat.requires_backends = _without_natten(modeling_dinat.requires_backends)


def neighborhood_attention_forward(self, hidden_states, output_attentions=False):
    """``NeighborhoodAttention.forward`` with the legacy q/k/v layout ``(B, heads, H, W, head_dim)``.

    Inference uses the fused op; the two-step ops run only where the probabilities are needed (returned, or
    dropped out in training), exactly as transformers computed them.
    """
    batch, height, width, _ = hidden_states.shape

    def split_heads(x):
        return x.view(batch, height, width, self.num_attention_heads, self.attention_head_size).permute(0, 3, 1, 2, 4)

    query = split_heads(self.query(hidden_states)) / math.sqrt(self.attention_head_size)
    key = split_heads(self.key(hidden_states))
    value = split_heads(self.value(hidden_states))
    if output_attentions or (self.training and self.dropout.p > 0):
        scores = na2d_qk_rpb(query, key, self.rpb, self.kernel_size, self.dilation)
        probs = self.dropout(scores.softmax(dim=-1))
        context = na2d_av(probs, value, self.kernel_size, self.dilation)
    else:
        probs = None
        context = na2d(query, key, value, self.rpb, self.kernel_size, self.dilation)
    context = context.permute(0, 2, 3, 1, 4).reshape(batch, height, width, self.all_head_size)
    return (context, probs) if output_attentions else (context,)


def _without_natten(requires_backends):
    """transformers' backend check, minus natten (segkit provides the attention)."""

    @functools.wraps(requires_backends)
    def check(obj, backends):
        backends = [backends] if isinstance(backends, str) else list(backends)
        others = [backend for backend in backends if backend != "natten"]
        if others:
            requires_backends(obj, others)

    return check


def _import_modeling_dinat():
    try:
        from transformers.models.dinat import modeling_dinat
    except ImportError as exc:
        if "natten" not in str(exc):
            raise
        raise SegkitError(
            f"transformers cannot import its DiNAT model because of the installed natten package ({exc}); "
            "segkit does not need natten: run `pip uninstall natten`") from None
    return modeling_dinat
