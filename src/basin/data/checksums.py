"""SHA-256 of the *uncompressed* content of every dataset file basin reads.

The keys are paths relative to the mirror root (``/work/shared/data`` layout), without any
``.gz`` suffix. Hashing the uncompressed content means that the official ``.gz`` downloads,
the mirror's recompressed ``.gz`` files and plain uncompressed copies all verify against the
same table. CIFAR-10's ``batches.meta.txt`` is deliberately absent: the official tarball's
copy differs from the mirror's in trailing blank lines, and basin hard-codes the class names.

The optional set that the mirror lacks (the Tiny-ImageNet zip) has no published SHA-256: only the
MD5 that public loaders pin for the downloadable archive. Those files are listed in
:data:`MD5` instead, hashed as published (the archive's own bytes, never its decompressed
content). MD5 still catches truncated or corrupted downloads; it is no proof against a
deliberately forged file.
"""

from __future__ import annotations

SHA256: dict[str, str] = {
    "cifar-10-batches-bin/data_batch_1.bin":
        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "cifar-10-batches-bin/data_batch_2.bin":
        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "cifar-10-batches-bin/data_batch_3.bin":
        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "cifar-10-batches-bin/data_batch_4.bin":
        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "cifar-10-batches-bin/data_batch_5.bin":
        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "cifar-10-batches-bin/test_batch.bin":
        "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    "fashion-mnist/t10k-images-idx3-ubyte":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "fashion-mnist/t10k-labels-idx1-ubyte":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    "fashion-mnist/train-images-idx3-ubyte":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "fashion-mnist/train-labels-idx1-ubyte":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "mnist/t10k-images-idx3-ubyte":
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "mnist/t10k-labels-idx1-ubyte":
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "mnist/train-images-idx3-ubyte":
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "mnist/train-labels-idx1-ubyte":
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "notmnist/t10k-images-idx3-ubyte":
        "8e7f38ae95cc8f48e0986175ffc9137e5007ebcf3d8fdf6656c904eb9dab198b",
    "notmnist/t10k-labels-idx1-ubyte":
        "5f8e6012f2ce730700d8d05fca098bc47f71d25b890e4bec7ac5ebfd614a4001",
    # ODIN's resized sets as the mirror repacks them (sha256 of the uncompressed tar; not the
    # official archives, whose MD5 differs): datasets tiny-imagenet-resize and lsun-resize
    "odin/Imagenet_resize.tar":
        "5effe238670f0cfd9e487f37dc0561f63d8f6e80cc737f3c83e7192cfe2eee79",
    "odin/LSUN_resize.tar":
        "0cf28d9fe191c1f1abe3a77925eed4a36083ecc39311aac92db29d87def905d1",
    "omniglot/all_runs.zip":
        "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",
    "omniglot/images_background_small1.zip":
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "omniglot/images_background_small2.zip":
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
"""Relative file path -> sha256 hex digest of its uncompressed content (treat as read-only)."""

MD5: dict[str, str] = {
    # the MD5 that public Tiny-ImageNet loaders pin for the cs231n zip (the site publishes none)
    "tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de",
}
"""Relative file path -> MD5 hex digest of the file exactly as published (treat as read-only).

Only for files that no SHA-256 is published for; a path is in :data:`SHA256` or here, not both.
"""
