import os

import torch

# Tests share 2 cores; threads are set once so timings and memory stay predictable.
torch.set_num_threads(int(os.environ.get("TOKENZOO_TEST_THREADS", "2")))
