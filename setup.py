"""Package discovery across two roots (src/lct_train and the top-level data_tools), and the
Hydra configs of conf/ shipped inside the package as ``lct_train/conf`` (a non-editable
install finds them there: ``lct_train.config.store.find_conf_dir``)."""

from setuptools import find_packages, setup

CONF_PACKAGE = "lct_train.conf"

setup(
    packages=[*find_packages("src"), *find_packages(".", include=["data_tools", "data_tools.*"]),
              CONF_PACKAGE],
    package_dir={"": "src", "data_tools": "data_tools", CONF_PACKAGE: "conf"},
    package_data={CONF_PACKAGE: ["*.yaml", "*/*.yaml"]},
)
