"""Run the Cython example built by setup.py: python run.py [ACCESSES]"""

import sys

import s2pt_cython_sim

lines = s2pt_cython_sim.run(int(sys.argv[1], 0) if len(sys.argv) > 1 else 100000)
print("\n".join(lines))
agreed, total = lines[-2].removeprefix("image_walks_agree=").split("/")
sys.exit(0 if agreed == total else 1)
