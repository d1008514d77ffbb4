"""Teacher partition into stem, blocks and head, and the candidate blocks that replace them."""
