"""Package discovery across two roots: src/lct_train and the top-level data_tools."""

from setuptools import find_packages, setup

setup(
    packages=find_packages("src") + find_packages(".", include=["data_tools", "data_tools.*"]),
    package_dir={"": "src", "data_tools": "data_tools"},
)
