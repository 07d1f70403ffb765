import torch

trainable = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.SGD([{"params": trainable, "lr": 0.001}])
