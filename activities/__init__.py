"""Every side effect of a lifecycle, one adapter per real system.

Each activity class receives its client in the constructor (money-transfer template), so a worker wires
real clients and a unit test can pass a double.
"""
