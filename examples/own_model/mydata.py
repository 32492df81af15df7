"""Your own data for a recipe: a function returning numpy arrays (see recipe.yaml).

Here, the Wisconsin breast-cancer measurements that scikit-learn ships (569 samples, 30
features, 2 classes), standardised. hvdkit holds out data.test_fraction of them for testing.
"""

import numpy as np


def breast_cancer(standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    if standardize:
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype(np.float32), y.astype(np.int64)
