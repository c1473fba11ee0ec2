"""Switching every dropout of a policy off: PPO ratios and the KL to the reference compare two
forwards of the same tokens, which must agree exactly.

``nn.Dropout`` modules are not the only place dropout hides: attention layers read their
probability from the config or from a float they copied at construction (Llama, Mistral and
Qwen's ``self.attention_dropout``, OPT's ``self.dropout``) and apply it functionally in train
mode, and some models drop whole layers (``layerdrop``).
"""

from __future__ import annotations

from torch import nn

_MARKERS = ("dropout", "pdrop", "layerdrop")


def _is_dropout_field(name: str, value: object) -> bool:
    return isinstance(value, float) and any(marker in name.lower() for marker in _MARKERS)


def _zero_dropout_fields(obj: object) -> None:
    for name, value in list(vars(obj).items()):
        if _is_dropout_field(name, value):
            setattr(obj, name, 0.0)


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability of ``model`` to 0: its modules, its configs' fields
    (``attention_dropout``, ``resid_pdrop``, ``layerdrop``, ...) and the float copies of them
    that its layers keep."""
    configs = {}
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        _zero_dropout_fields(module)
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            configs[id(config)] = config
    for config in configs.values():
        _zero_dropout_fields(config)
