"""The training order of epoch e is a function of (seed, e) only (the contract resume relies on)."""

import torch
from torch.utils.data import Dataset

from merx.dataset import make_loader


class Items(Dataset):
    """Indices, tagged with the epoch the loader said it serves."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"i": torch.tensor(i), "epoch": torch.tensor(self.epoch)}


def order(loader) -> list[int]:
    batches = list(loader)
    assert all(int(b["epoch"][0]) == loader.epoch for b in batches)
    return [int(i) for b in batches for i in b["i"]]


def test_epoch_order_depends_on_seed_and_epoch_only():
    uninterrupted = make_loader(Items(40), batch_size=7, shuffle=True, num_workers=0, seed=5)
    orders = [order(uninterrupted) for _ in range(3)]
    assert uninterrupted.epoch == 3
    # A resumed run: a fresh loader told that epochs 1-2 were served draws epoch 3 alike.
    resumed = make_loader(Items(40), batch_size=7, shuffle=True, num_workers=0, seed=5)
    resumed.epoch = 2
    assert order(resumed) == orders[2]
    assert resumed.epoch == 3
    # The orders are shuffled, differ between epochs and between seeds.
    assert sorted(orders[0]) == list(range(40)) and orders[0] != list(range(40))
    assert orders[0] != orders[1] != orders[2]
    other = make_loader(Items(40), batch_size=7, shuffle=True, num_workers=0, seed=6)
    assert order(other) != orders[0]


def test_epoch_order_does_not_depend_on_global_torch_state():
    a = make_loader(Items(30), batch_size=4, shuffle=True, num_workers=0, seed=1)
    torch.manual_seed(123)
    first = order(a)
    b = make_loader(Items(30), batch_size=4, shuffle=True, num_workers=0, seed=1)
    torch.manual_seed(999)
    torch.rand(10)
    assert order(b) == first
