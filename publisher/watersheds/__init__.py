"""CoRE Stack micro-watershed layers: publishing a layer, importing CoRE Stack catalogs."""
