"""Tensor operations segkit ships itself so that no model needs a compiled extension."""

from .neighborhood_attention import na2d, na2d_av, na2d_qk_rpb

__all__ = ["na2d", "na2d_av", "na2d_qk_rpb"]
