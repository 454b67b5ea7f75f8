"""Where viskom's data comes from: local frames, VISQL tables, GOES, Gaia, tools, the simulator."""
