"""cocotb test modules and the testbench pieces they are built from.

``tb_mmu``   the RTL MMU against the golden model (random walks and races, device, smoke)
``agents``   CPU request drivers, invalidation drivers, the PTE racer
``device``   the DeviceMmu driver and its comparison with SoftArch's device model
``tables``   random Sv39 page tables in a PhysMem
"""
