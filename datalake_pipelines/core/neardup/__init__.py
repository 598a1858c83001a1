"""Near-duplicate images: the perceptual hash recorded at ingest, and clusters of images within a Hamming distance.

``phash`` computes the hash (``imagehash`` pHash, 64 bits), ``clusters`` finds pairs and clusters without
comparing every pair, ``report`` reads a lake's hashes and builds the report, ``exclude`` drops all but one member
of each cluster from an export or download. Imports no Dagster.
"""
