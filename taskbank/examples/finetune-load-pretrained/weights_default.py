import torchvision

model = torchvision.models.resnet18(weights="DEFAULT")
