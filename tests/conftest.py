"""Suite-wide settings: one intra-op thread per test process keeps small-tensor tests fast and repeatable."""

import torch

torch.set_num_threads(1)
