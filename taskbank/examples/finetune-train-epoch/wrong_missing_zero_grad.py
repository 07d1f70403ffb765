model.train()
for inputs, labels in dataloader:
    loss = criterion(model(inputs), labels)
    loss.backward()
    optimizer.step()
