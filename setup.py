"""ament_python package h1_training (also pip-installable into a plain venv, see scripts/setup_env.sh)."""

from glob import glob
import runpy
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "h1_training"

# The executables live in one table (src/h1_training/executables.py), read here by path.
EXECUTABLES = runpy.run_path(str(Path(__file__).parent / "src" / PACKAGE / "executables.py"))

setup(
    name=PACKAGE,
    version="0.1.0",  # keep equal to package.xml (test_layout checks)
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    # the page: index.html (committed) and the esbuild bundle app.js/app.css (built by scripts/setup_env.sh)
    package_data={PACKAGE + ".web": ["static/*"], PACKAGE + ".bench": ["data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
        ("share/" + PACKAGE + "/config/bringup", glob("config/bringup/*.yaml")),
        ("share/" + PACKAGE + "/config/params", glob("config/params/*.yaml")),
        ("share/" + PACKAGE + "/foxglove_configs", glob("foxglove_configs/*.json")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "pyyaml",
        "h5py>=3.8",
        "msgpack>=1.0",
        "websockets>=12",
        "pyzmq>=25",
        "pymodbus>=3.6,<4",
        "opencv-python-headless<4.13",  # the cv2 lerobot 0.4.4 pins; see DESIGN.md §3 on two OpenCVs
        "psutil",
        "tqdm",
        # model comparison statistics (robot side: the model_comparison node): tests, intervals, Holm
        "scipy>=1.11",  # boschloo_exact, binomtest(...).proportion_ci
        "statsmodels>=0.14",
        "mcap==1.6.0",                   # dataset_manager's MCAP export (datasets/mcap_export.py)
        "mcap-ros2-support==0.6.0",
    ],
    extras_require={
        # robot laptop: unitree_sdk2py itself is installed with --no-deps by scripts/setup_env.sh
        "robot": ["cyclonedds==11.0.1", "pyrealsense2"],
        # GPU server: training and serving (torch comes with lerobot)
        "train": ["lerobot==0.4.4", "imageio[ffmpeg]==2.37.0", "av", "matplotlib>=3.8"],
        "gateway": ["foxglove-sdk>=0.30,<0.31"],
        # training_web_app: FastAPI on uvicorn; python-multipart for the login form
        "web": ["fastapi==0.163.2", "uvicorn==0.54.0", "python-multipart==0.0.34"],
        # protobuf: decodes Foxglove images in the gateway test; httpx: the web app's API tests
        "test": ["pytest>=8", "pytest-timeout", "ruff", "dm-tree", "pillow", "import-linter>=2.5,<3", "protobuf",
                 "httpx"],
    },
    zip_safe=True,
    maintainer="h1_training developers",
    maintainer_email="h1-training@example.com",
    description="Human-in-the-loop training loop for the Unitree H1-2 with Inspire hands",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in EXECUTABLES["ALL"].items()],
    },
)
