"""Deterministic stand-in checkpoints for torchvision's pre-trained weights.

No model hub is reachable from the sandbox (or from these machines). torchvision's
loaders read `$TORCH_HOME/hub/checkpoints/<file>` without downloading when the file is
there, so the sandbox gets a TORCH_HOME holding these stand-ins. A deployment can put
the real files at the same paths instead. The stand-ins are seeded, and their
batch-norm parameters and statistics are randomised too, so no default initialisation
(whatever the seed) equals them: only a real "pretrained" load does.

Usage: `python -m sandbox.checkpoints DIR` writes them under DIR/hub/checkpoints.
"""

from __future__ import annotations

import sys
from pathlib import Path

# (torchvision builder, weights enum, member, checkpoint file). The file names are
# torchvision's own (a test checks them against the enums), so no torch import is
# needed to see whether the stand-ins exist.
STANDINS: tuple[tuple[str, str, str, str], ...] = (
    ("resnet18", "ResNet18_Weights", "IMAGENET1K_V1", "resnet18-f37072fd.pth"),
    ("mobilenet_v2", "MobileNet_V2_Weights", "IMAGENET1K_V1", "mobilenet_v2-b0353104.pth"),
    ("mobilenet_v2", "MobileNet_V2_Weights", "IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth"),
)
SEED = 20_260_101


def checkpoint_paths(torch_home: Path) -> list[Path]:
    return [torch_home / "hub" / "checkpoints" / filename for *_, filename in STANDINS]


def ensure_checkpoints(torch_home: Path) -> list[Path]:
    """Write any missing stand-in under torch_home/hub/checkpoints; returns every path."""
    paths = checkpoint_paths(torch_home)
    if all(p.exists() for p in paths):
        return paths
    import torch
    from torchvision import models

    for index, ((name, *_), path) in enumerate(zip(STANDINS, paths, strict=True)):
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        gen = torch.Generator().manual_seed(SEED + index)
        model = getattr(models, name)(weights=None)
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                if not tensor.is_floating_point():
                    continue
                if key.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
                elif key.endswith(("running_mean", "bias")):
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)
                elif tensor.dim() == 1:  # batch-norm scales
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
                else:
                    fan_in = max(1, tensor[0].numel())
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return paths


if __name__ == "__main__":
    for p in ensure_checkpoints(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(p)
