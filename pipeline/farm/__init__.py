"""The build farm: graph nodes realised on Dask distributed workers, results verified on the way back."""
