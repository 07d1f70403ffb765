model.requires_grad_(False)
