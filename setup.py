"""fcnkit: Caffe-style Fully Convolutional Networks in Python 3 (netgen -> surgery -> solvers)."""
from setuptools import find_packages, setup

setup(
    name="fcnkit",
    version="0.1.0",
    description="Generate, convert and train Caffe FCN models (FCN-AlexNet, FCN-VGG16 32s/16s/8s) in Python 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["netgen*", "surgery*", "solvers*"]),
    py_modules=["solve", "infer"],
    package_data={"netgen": ["proto/*.proto"], "surgery": ["classifiers/*.prototxt"]},
    install_requires=[
        "numpy>=1.23",
        "protobuf>=7.35.1",
        "h5py>=3.0",
        "Pillow>=10.1",
        "opencv-python-headless>=4.5,<5",
        "scipy>=1.8",
        "tqdm>=4.60",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "matplotlib>=3.5",
        "graphviz>=0.20",
        "torch>=2.1",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "grpcio-tools>=1.60"]},
    entry_points={
        "console_scripts": [
            "fcnkit-netgen=netgen.cli:main",
            "fcnkit-surgery=surgery.cli:main",
            "fcnkit-solve=solve:main",
            "fcnkit-infer=infer:main",
        ]
    },
)
