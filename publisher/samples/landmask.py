"""A coarse land mask for synthetic catalogues (data only; used by ``synthetic_catalog``).

0.5° cells over the globe (720 x 360, row 0 at 90°N, column 0 at 180°W), 1 = the square touches
land in Natural Earth's 1:110m countries (the ``naturalearth_lowres`` layer), Antarctica (south of
60°S) removed. Stored as ``np.packbits`` of the row-major mask, zlib-compressed, base64. Built by
:func:`tessera_stac.publisher.samples.catalog.build_land_mask`; 66,754 land squares, i.e. about
1.67 M 0.1° cells, close to TESSERA's ~1.8 M tiles per year.
"""

from __future__ import annotations

LAND_RES_DEG = 0.5
LAND_SHAPE = (360, 720)

LAND_0P5_B64 = (
    "eNrtnc9uHEkZwKtVq3RWMi4hLkFErvAE5MAhSFnXShw48gpZ8QBrtAe8UnCXWSRfVuQFEOZJ1h0ZkQtSOOaEO/hgISFSUQ4u"
    "43YXVdXVM/3nqz89mZE4TEnrJOOZX9d89dX3r77uRWg7tmM7tmPtgylVrRGXK6Vq8xeszCjXBqZnhifbGevRrFEAZtyqbsh1"
    "kR3vbEH+oNRmpmxGQHTJq5ApYHTywO8sp1C9tyfLqlUHdQNN+cduNfO6//aZc66K6ZQJpCeF4mmaLJBFStyfcrVU8wpYlgQ0"
    "lrliLwzrfCCMcvHNBSS9Ko18dtJo1qsBuZuUqgtIfHFyQSTKX0gt6TqH5oxYXUx1DJ9Xca3I9OewyM2S9RdwIQMqdqANUMfI"
    "RCGK8LV65yXj/uwW0y+ia8huFf0zu1FX5usTSM5D5WzJ7GxxaerbNNSIgclrp7Q4SGatmUW0p/DMu5bE6PHtbYdiAXLmtkze"
    "F1eh3tVetMg+LMg0SC4X23KhPFSdSFg1GmIQeqs86c8HdCqkQT1yHTUYHO3ntbqUt3IoaGBNZKcW7aixuVTjNXIia8iden3t"
    "WN3HgA8Ueq0e9MjanJd6bn63qmot3BfdLIuROvf9jpZb8deB1pd6bpVPM/T0aCNpZ9L8ZGwuXQyNS9W3WNWQrEkNbsy01Ye+"
    "NGDy2Pm8vbpYrGVml4FU3QqaOaI7RTp1KADf3eqJUbp8RG4dJ6+cmbcL96b90DMrhszK2a4am5K7HUKFJl9ALtMuUb7YafpC"
    "v720s2h+qL7pdgebSqOnKH4yQT0FKA3FkvVlOnGwobNyq+z+pXxkpcUplg71ppOUUGf/IXXrgmgx3ihsuSPVtZf82n6ajV4V"
    "7FRZMl9cVY7CJ4k5kkx/u2vlHfWIrD12pV+ghiwXhoOPY5HjmqjY4BPdsRFdnb+yKzE2Gg74sm7/vFKhSYPBliXzFtS3Y86u"
    "vn2/kKd/VBgO44j70Uo544NgslIJQxbQq6WZnWjJepXrTtMKlT5uPAtL1akjWxURvZCv/jSJzOFX9ZSvSqsK3E5VLiy49qy/"
    "TuAeNxN9NuNCa6uS3M6x1WLZWfC3es4pMkF7KP9y+vJpQ61IMmclOm9Pw4o2DItlz0P3VtW426X9YWqxgBdpZD2tBtC6iuw6"
    "a1k4bX602IEsjaw/vAPswQrJHVS0BloM94lMJyMCGdj3Fw0RliWG0b2YQaaQjLILxR+3MdMgI7H2Kjbu3OpQMEMjrZ7lAzfP"
    "ksiXt845TOUslmQ8JifI+fids7tW7SlAtk6SlENyTeMSZs5V/sy4PnQ6StGIqgkH8rM6r6OarP59v9OlWiyDFkfWL07zaTZO"
    "EyEpN1mz1NJ6EIV3/2TDGC3XlvVaCRzZ1Dp/WrqKL+VQrTtdHMZcWuL0XJVZkFwNkxWihtrXOI0Zhu86VdTvKR9G3CpqN68T"
    "H0PDScvWRAwDeR1u6ZCvDGudNblLcvN0rNc+cq04i1i4ReBndoOYFExabzKM9E3EehchyyGZTcmy84AjOetJsdgC4uX6NMO6"
    "lAvBJgG5+arXEkUXEC9TaTEsTLXkSS5mfcwNvwuSy0FdCXc74SxIzqUWTnEd3oDvvl2moL2P9k2HKCYRnSh4PEz8myGP7U1+"
    "0l9CNk6K8w+KFymuZErOomSR5qSmmfLLvspPyOQqlSy95VA7inEiT05MeLQG8rREgFNc9oV+40FCPfQdH2flsfE6sdL6gg/s"
    "c0Kg+JqnkC8F7W/vT4halTw2No0c1uFSyKdwLZqcjcx4Uc9dwT99Hio8LzWoaOaS/4hWIGcp5IdpZfjfDQtOCbFis5dGPkf/"
    "QNMsM+gHaRr5miNIN+5MEgPH0ZKGz1E8lcVuE8ojpjzRgXiQRm6mRbeLzt/AmlIlrqCYkk+t99VhLLxtyrQVPOVTsjlXKB8Q"
    "H5nTKoFcD6+fGdjphy7MgS0fYilkQBbNT4Rd18wjZx2Ui4Q9WE3IjY6HmXXohQJ35EHmqfdn4BlYn/yVEQna15uGe+o7aEXy"
    "F6ZIeGyUuQTjxeyfKeRqIiqJnqnL7re/VFC2J1LIfEIukaC3zq1DRSKBshSynJa9NTm/bcuxAPlCf8skspiSORL4X448tUim"
    "BuIjowhZizGr3O6b5N/NU5ZIrqaleo4+z6qi3X3V2FqLRwX3kwtPeLSYMyp48QImS3NAhqvwcTRIdnUlztqQVYzJtSiqYf7v"
    "I/MJuUb06AjtY9UdjowmrZOvwkemIfKZqTjvoj1fdFBrsre1gYROBPeQTVx20Wc3sNUnVbYimbQVJo6+B1t9ojWxDHRteMnU"
    "1a4kguesk1x/owcOdSgwl8Ydesnn/j6AbJibT5VdBuIwvpsHzr2ZvxckW14Pe/JXEjhBJv5DTLyUkY/MbsKNNx5y7oR05MtY"
    "KkSrFLLnV03mOSexpwLxphDoeNQJKlP1LlmF/M6rGg7nzzaF3p6B0+OrGPkuQEYfRVYrktEHZ7ai5Atv949nfG3157nRrXCy"
    "+GIu+TOny/tBT6bHyVxp7Dld3o9kdKMGnQRyUbhD45CBNWeql2CtLtR1wlyR+H5gAd8vS1gBlzw276ctmT6NkCUrgonY1Dq8"
    "cuSfBlRD6v/++8nZPHLmyOSTANmetWVnQIE4sgkNOX8QI+ffjOK6xxHyW6fyDwLq3JjLkFHHQnMQmbT0kEcBbdet0Y++IuQn"
    "7mD0figdcIfVA7KIkR8ySy6CiUbunMNgo8S6yh5QQ87U30PkE6cMgwgTIpfDLWFOJi5kyGyc98l3zqBD5DdDsta6nx83frPR"
    "GQ1HvnFWA6p67Q0ZtXHvjMfITRvqNVba+x6/ykdzppPYASDrr0YKR248FZOBoIk54NORlAis4NvOVRbmD/PDV4uphkbNkq9k"
    "IHHuLH3hmgflkWfO1SiHMukGrgPkYkmubNfEcw+ZDxmX2iLep+rAX1RhS7Ltx5CHCD2Ldna2tpZSdegvULBlj5VtTDHkwyiZ"
    "uV6l0k+2KRtv32tXpobL+4AvjRWvyKKTobZk+LADgkRKTI2bJrLmi7QfSOiC1l/xQYScO1e9IHPX9hbpdD2FcuOxGXXNmfoC"
    "hJrrZCJORjlYKRiZUZcj8jZTTCTjKXkUiV65MJh05MpbnII7br1zvnaxVp+cdDdBAVQ3Rn2Fpbsgb79QNXVwnrQwsoJdhtQn"
    "p/Wxx+a87Ghfkr+qksSh1/pN8EDkXp98asiPUpbQ+Cr8JlD0blzobvtREbGp/N5BCpny/v0LwBEAbtwF7cxzU+2mSXPWQZsO"
    "kxt/mqL6ZIK1UDCtksmDFJkBvQnmq5gfu0aX80SyKOE2wzG5KS1ZO6td8jiFnN3ejOZMPHO23TrGnzy89wQlKfTkuBvOK7+2"
    "ZK7V4gk+TCOfjtIlH9n2LpkZPCJpN8AQOkrxPOTvL8iI1ElkTEdpKYYzVmuVsf1ue2nkZaeoZ6v0yfaH+DTxdqC2m/2Zd6t0"
    "grJXkPYvcsac+xrNhncGlf3wyhQ1a3Qwh6xGkSSYZWNhtmDyDWqT/uRcPu+Te6qOZZOsGUvycmrmbhsK5sJZrWNcujp5tIz9"
    "V5ujRVNTupwrT7l+INVi3xmQpMHC5MF3Z2e99qaPJcvhq/wH5ghvFll6ahHVKIgwoeMX5Qwz6iWXw9XW5PrgMomcRciDqEXv"
    "kkLV6nwWWcDkZhTmaPJ7dTyL3MDkekxm6j3PeAoaw5XDAhRSZsgfmuxEziHXCWRzAqcuG21a5pAbUBpiHAZSdS61aTqaQR5q"
    "LoNroIUg6pUw5S0+gzx4M4VroExqskQ3d1pMeaJujOZH4Eollbk6kbQ2wsM8yYiOZZrDlUodapBv6t0dm+BXyWQJCGkSBqJ7"
    "x98h9KW58ymdDPRRjX2eaQzF37V3buB0cn+5MphsAg78B4R2tMm7+P1KZOQ5bTEtl99qMlWNupdOruJk+hf7x47Wned5sj4D"
    "5GbqJ8qOjGKC9pALmEwWN23qXz1fJxkv72DlwcO8YYBYTQwHdHrITP8SVTrfy5+leNixbnjmrKPnwkRKqNFZWfYRZOgc4lfH"
    "ZrMe5VWshgIHh93LkJ6+LNvwMUamQTJgz7LWdes4Gj1JJaMkcjt20MPpuYavcFQDF+S+mvBOcpQ7i4zufJ17MFkC0ijBpCRX"
    "KWQMk4sQWe9xOocsQPLhyuQMDgu6zQNVQXd1HL0ZMj1TKU/MiJCxBI2YOyy5l2ZGK+B6ZQ43wPMUMguROYPJFVuQeXx7g2Tg"
    "rD+3hxZWk7D+F49vlRIgQ32h9hE0S3LCEgLkOgPI1tIU3Xd5mOCvALKAnrhBBjv2acISAuQSSoZpMplCEW33UpSM5pK7W20A"
    "ss+tzyE3QOl7YcJ4Onm6rDVE7ica1Qpk1s4ZaP7rbyyRRG4gMvYfMRjy4Qpk6iOTvqN4mkSuAQBAHlRr9pLIEiYjlFIHCpLL"
    "TZEbSJxAPzlL7WpZvFfA5MZP5onkEirxBsllIpkDZAEc59LZZMjT6M8+9s+5SiM3HjJaOxmvjaxSyXQGuZg1Z5LaZ+cjZxsj"
    "I99eyOeSa+hVtA6yBF5twuT4CsITYB5rtjkynkuuAL2VayGXgHaJcI5QppE5QK585Pbu4UQytItLD9k9cIUnkcHWbV/+yIEb"
    "2b1kqFm59pPzpJAxg2NW3zkuVvdR77b+ZxHyLfBkK88CWc+Iz7qveRBJvJNP5rpYrug+c7hGcre+MppMYLXCIzpxR34YKZ3M"
    "JmcdmUQKSauQRRJ5tpxRR87rMHn+A0u7HpjQcVCuVnkybL4f3lCOLND80T2VRQalsQq5M4nVpsi/KNdO/k1rnlWQfFetQC54"
    "q9c8lKas9PjdloxvwwlQuQK57W7GclPkPLREP1pNGjSqdLZ3e4XR3r9UVEFp1Ctrc1A1Fg8mXWXgJpymrP5o5jxCLlcn12FL"
    "+xFkGfYO1crkcCGJre8R2BNpbIqsNkiOy/lwRXJcN56vSOYbmzPalG40GyRnclPkfENkFfY5qw+2sRWkiU9Wnz/IGv9HAmMP"
    "KzZEzj7CD8aUY2PkfFMruB3bsR3bsR3bsR3bsR3bsR3bsR3bsR3bsR3bsR3bsR3bsR3/7+N/y3lxuA=="
)
