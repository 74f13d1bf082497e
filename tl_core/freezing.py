"""Freeze depth: cut any timm model into its ordered blocks and freeze the first K.

Blocks come from the model's own `group_matcher` (stem, then stages or transformer blocks, then final norm or
conv head); the classifier is never a block and always trains. Frozen BatchNorm layers are kept in eval mode,
so their running statistics do not move.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from timm.models import group_parameters
from torch import nn

from tl_core.backbones import build_model, classifier_prefix


@dataclass(frozen=True)
class Block:
    index: int
    name: str
    param_names: tuple[str, ...]
    num_params: int


@dataclass(frozen=True)
class FreezePlan:
    blocks: tuple[Block, ...]
    frozen_blocks: int
    head_params: int
    head_param_names: tuple[str, ...] = ()

    @property
    def total_blocks(self) -> int:
        return len(self.blocks)

    @property
    def trainable_params(self) -> int:
        return self.head_params + sum(b.num_params for b in self.blocks[self.frozen_blocks :])

    @property
    def total_params(self) -> int:
        return self.head_params + sum(b.num_params for b in self.blocks)

    def at_depth(self, freeze: str | int) -> FreezePlan:
        """The same blocks with another freeze depth: what would train, without touching a model."""
        return replace(self, frozen_blocks=resolve_depth(freeze, self.total_blocks))


def backbone_structure(name: str, num_classes: int) -> FreezePlan:
    """A backbone's blocks and parameter counts from its architecture alone (no weights are read), nothing frozen."""
    return apply_freeze(build_model(None, name, pretrained=False, num_classes=num_classes), "none")


def model_blocks(model: nn.Module) -> list[Block]:
    """The backbone's blocks in input-to-output order, the classifier left out."""
    head = set(_head_param_names(model))
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    blocks: list[Block] = []
    for names in group_parameters(model, model.group_matcher(coarse=True)).values():
        body = tuple(n for n in names if n not in head)
        if body:
            blocks.append(Block(len(blocks), _block_name(body, len(blocks)), body, sum(sizes[n] for n in body)))
    return blocks


def resolve_depth(freeze: str | int, total_blocks: int) -> int:
    """'all' -> every block, 'none' -> 0, K -> K (checked)."""
    if freeze == "all":
        return total_blocks
    if freeze == "none":
        return 0
    try:
        depth = int(freeze)
    except (TypeError, ValueError):
        raise ValueError(f"Freeze depth must be 'all', 'none' or a number of blocks, not '{freeze}'.") from None
    if not 0 <= depth <= total_blocks:
        raise ValueError(
            f"Freeze depth {depth} is out of range: this backbone has {total_blocks} blocks (0 to {total_blocks})."
        )
    return depth


def apply_freeze(model: nn.Module, freeze: str | int) -> FreezePlan:
    """Freeze the first K blocks (requires_grad off); everything after them and the head trains."""
    blocks = model_blocks(model)
    depth = resolve_depth(freeze, len(blocks))
    frozen = {n for b in blocks[:depth] for n in b.param_names}
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    head_names = tuple(_head_param_names(model))
    head_params = sum(p.numel() for n, p in model.named_parameters() if n in head_names)
    return FreezePlan(tuple(blocks), depth, head_params, head_names)


def set_train_mode(model: nn.Module, keep_statistics: bool = False) -> None:
    """model.train(), except frozen normalisation layers stay in eval so their running statistics stay put.

    `keep_statistics`: every BatchNorm layer stays in eval (its scale and shift still learn). Fine-tuning from a
    fitted head needs it: the head was fitted on features made with these statistics, and letting augmented batches
    move them cost the head 30 points of accuracy before a single weight had changed (measured on solar-cell scans).
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            params = list(module.parameters(recurse=False))
            if keep_statistics or (params and not any(p.requires_grad for p in params)):
                module.eval()


def top_third_frozen(total_blocks: int) -> int:
    """The freeze depth at which the last third of the blocks (at least one) trains: "Fine-tune the top"."""
    return total_blocks - max(1, round(total_blocks / 3))


def layer_lr_scales(plan: FreezePlan, decay: float) -> list[float]:
    """Learning-rate multiplier per block for layer-wise decay: the block next to the head gets 1, earlier ones less."""
    n = plan.total_blocks
    return [decay ** (n - i) for i in range(n)]


def _head_param_names(model: nn.Module) -> list[str]:
    prefix = classifier_prefix(model)
    return [f"{prefix}.{n}" for n, _ in model.get_classifier().named_parameters()]


def _block_name(param_names: tuple[str, ...], index: int) -> str:
    """A short readable name: the common module path ('layer3', 'blocks.5'), or the modules joined."""
    parts = [n.split(".")[:-1] for n in param_names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if common:
        return ".".join(common)
    tops = list(dict.fromkeys(p[0] if p else n for p, n in zip(parts, param_names, strict=True)))
    name = " + ".join(tops[:3]) + (" + ..." if len(tops) > 3 else "")
    return "stem" if index == 0 and len(tops) > 1 else name
