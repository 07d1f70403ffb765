import torch.nn as nn

model.classifier[1] = nn.Linear(model.classifier[1].in_features, 5)
