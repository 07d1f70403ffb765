model.train()
for step, (images, targets) in enumerate(dataloader):
    logits = model(images)
    loss = criterion(logits, targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
