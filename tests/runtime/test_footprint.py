"""deep_size: the memory an estimator's objects and arrays hold."""

from __future__ import annotations

import numpy as np

from mlserve.runtime.footprint import deep_size


def test_an_array_counts_its_buffer_and_a_view_counts_the_array_it_views_once() -> None:
    array = np.zeros(250_000)  # 2 MB
    alone = deep_size(array)
    assert array.nbytes <= alone < array.nbytes + 1024
    both = deep_size([array, array[10:20]])
    assert alone < both < alone + 1024  # the view adds its header, not a second buffer


def test_containers_and_instance_attributes_are_walked_and_shared_objects_counted_once() -> None:
    class Holder:
        def __init__(self) -> None:
            self.vocabulary = {f"term{i}": i for i in range(10_000)}
            self.again = self.vocabulary

    size = deep_size(Holder())
    keys = sum(len(f"term{i}") for i in range(10_000))
    assert keys < size < 4 * (keys + 10_000 * 100)
    assert deep_size(Holder().vocabulary) < size < deep_size(Holder().vocabulary) + 2048


def test_object_arrays_count_their_elements() -> None:
    labels = np.array(["x" * 1000, "y" * 1000], dtype=object)
    assert deep_size(labels) >= 2000
