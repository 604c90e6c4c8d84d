import torch

from medgraft.data.slicing import (
    SliceStackDataset,
    stack_indices,
    stacks_to_volume,
    volume_to_stacks,
)


def test_stacks_hold_adjacent_slices_with_edge_repeat():
    assert stack_indices(4, 3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert stack_indices(3, 5).tolist()[0] == [0, 0, 0, 1, 2]


def test_round_trip_reassembles_the_volume():
    volume = torch.rand(1, 5, 6, 7)
    stacks = volume_to_stacks(volume, k=3)
    assert stacks.shape == (7, 3, 5, 6)
    # centre channel of each stack is that slice
    assert torch.equal(stacks[:, 1], volume[0].permute(2, 0, 1))
    assert torch.equal(stacks_to_volume(stacks[:, 1:2]), volume)


def test_slice_dataset_samples_match_the_volume():
    image = torch.rand(1, 8, 8, 4)
    label = torch.randint(0, 3, (1, 8, 8, 4))
    dataset = SliceStackDataset([{"image": image, "label": label}], k=3)
    assert len(dataset) == 4
    sample = dataset[2]
    assert torch.equal(sample["image"], image[0][..., [1, 2, 3]].permute(2, 0, 1))
    assert torch.equal(sample["label"], label[..., 2])
