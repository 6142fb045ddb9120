"""Labelled image sets (Fashion-MNIST, CIFAR-10, a folder's samples.npz) and test-set discovery."""
