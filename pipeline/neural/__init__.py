"""Our own PyTorch NeuralLinear recommender (two-tower encoder + Bayesian linear head)."""
