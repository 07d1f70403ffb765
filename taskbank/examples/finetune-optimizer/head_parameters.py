import torch

optimizer = torch.optim.SGD(model.fc.parameters(), lr=1e-3)
