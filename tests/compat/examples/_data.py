"""The loaders the scripts build, as the originals do: ``datasets.MNIST`` with ToTensor + Normalize."""

from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MNIST_NORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


def mnist_loader(train, batch_size, **kwargs):
    return DataLoader(
        datasets.MNIST("./data", train=train, download=train, transform=MNIST_NORM), batch_size=batch_size, **kwargs
    )
