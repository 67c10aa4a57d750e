"""Length-sorted chunks: a batch of texts of mixed lengths padded to its longest wastes most of
its compute; sorting by length first and running chunks keeps padding small."""


def length_chunks(lengths: list[int], chunk: int) -> list[list[int]]:
    """Indices grouped into chunks of similar length (longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + chunk] for i in range(0, len(order), chunk)]
