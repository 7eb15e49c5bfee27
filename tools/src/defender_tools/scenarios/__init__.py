"""Attack scenarios run from the host against a booted guest."""
