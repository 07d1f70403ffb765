for param in model.parameters():
    param.grad = False
