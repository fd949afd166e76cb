"""Scene shards: format, streaming loader, token-budget packing, augmentation."""
