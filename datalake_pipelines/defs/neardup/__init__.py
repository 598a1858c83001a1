"""Near-duplicates domain: the lake-wide ``near_duplicates`` report asset."""
