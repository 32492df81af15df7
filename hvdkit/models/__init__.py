"""What is trained: the catalogue of built-in models (framework-free checks and shapes), tasks,
user models and builders named by import path. The models themselves are built by each
adapter (hvdkit.adapters.<framework>)."""
