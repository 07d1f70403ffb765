import torch.nn as nn

model.fc = nn.Linear(1280, 5)
