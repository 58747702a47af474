"""Tests run in float64 (NIST and finite-difference checks need it); float32 cases opt in
explicitly with float32 inputs."""
import os

import jax

jax.config.update("jax_enable_x64", True)
os.environ["JACOPT_CACHE"] = "0"  # the suite never writes the user's cache (test_cache opts in)
