// One CVA6 Sv39 MMU (core/mmu_sv39/mmu.sv of the pinned pythondata-cpu-cva6 wheel) with flat
// ports, so that Amaranth (hdl/cva6.py) can instantiate it without CVA6's packed structs.
//
// Fixed here, as a CPU would set them for an S-mode kernel running U-mode processes:
// translation on for fetches and loads/stores, priv_lvl S (fetch) and `user ? U : S`
// (loads/stores), no misaligned exception, and PMP entry 0 programmed TOR from 0 to the top of
// the physical address space with R, W and X: without a matching PMP entry every S-mode
// walker read is denied (ACCESS fault).  `flush` drives both the pipeline flush (it stops a
// walk in flight: no fill, no answer) and the TLB flush (sfence.vma with flush_vaddr /
// flush_asid; 0 means "any", as rs1 = x0 / rs2 = x0).
module cva6_core_mmu #(
    parameter int unsigned TLB_ENTRIES = 8,
    parameter int unsigned ASID_WIDTH  = 9
) (
    input  logic                  clk,
    input  logic                  rst,
    // sfence.vma
    input  logic                  flush,
    input  logic [63:0]           flush_vaddr,
    input  logic [ASID_WIDTH-1:0] flush_asid,
    // satp, sstatus
    input  logic [43:0]           satp_ppn,
    input  logic [ASID_WIDTH-1:0] asid,
    input  logic                  user,
    input  logic                  sum,
    input  logic                  mxr,
    // loads and stores (DTLB): answered one cycle after a hit, or after the walk's fill
    input  logic                  lsu_req,
    input  logic [63:0]           lsu_vaddr,
    input  logic                  lsu_is_store,
    output logic                  lsu_valid,
    output logic [55:0]           lsu_paddr,
    output logic                  lsu_ex_valid,
    output logic [63:0]           lsu_ex_cause,
    // fetches (ITLB): answered in the cycle of a hit
    input  logic                  fetch_req,
    input  logic [63:0]           fetch_vaddr,
    output logic                  fetch_valid,
    output logic [55:0]           fetch_paddr,
    output logic                  fetch_ex_valid,
    output logic [63:0]           fetch_ex_cause,
    // a walk started (the MMU's itlb_miss_o | dtlb_miss_o)
    output logic                  walk_start,
    // the walker's read port (CVA6's dcache request: req until gnt, rvalid later)
    output logic                  mem_req,
    output logic [55:0]           mem_addr,
    input  logic                  mem_gnt,
    input  logic                  mem_rvalid,
    input  logic [63:0]           mem_rdata
);
    import ariane_pkg::*;

    icache_areq_o_t  icache_areq_in;
    icache_areq_i_t  icache_areq_out;
    exception_t      lsu_ex;
    dcache_req_i_t   ptw_req;
    dcache_req_o_t   ptw_resp;
    riscv::pmpcfg_t [15:0]          pmpcfg;
    logic [15:0][riscv::PLEN-3:0]   pmpaddr;
    logic itlb_miss, dtlb_miss;
    logic [riscv::PPNW-1:0] lsu_dtlb_ppn;
    logic lsu_dtlb_hit;

    always_comb begin
        pmpcfg  = '0;
        pmpaddr = '0;
        pmpcfg[0].addr_mode   = riscv::TOR;
        pmpcfg[0].access_type = '{x: 1'b1, w: 1'b1, r: 1'b1};
        pmpaddr[0]            = '1;
    end

    assign icache_areq_in.fetch_req   = fetch_req;
    assign icache_areq_in.fetch_vaddr = fetch_vaddr;
    assign fetch_valid    = icache_areq_out.fetch_valid;
    assign fetch_paddr    = icache_areq_out.fetch_paddr;
    assign fetch_ex_valid = icache_areq_out.fetch_exception.valid;
    assign fetch_ex_cause = icache_areq_out.fetch_exception.cause;
    assign lsu_ex_valid   = lsu_ex.valid;
    assign lsu_ex_cause   = lsu_ex.cause;
    assign walk_start     = itlb_miss | dtlb_miss;

    assign mem_req  = ptw_req.data_req;
    assign mem_addr = {ptw_req.address_tag, ptw_req.address_index};
    assign ptw_resp.data_gnt    = mem_gnt;
    assign ptw_resp.data_rvalid = mem_rvalid;
    assign ptw_resp.data_rdata  = mem_rdata;
    assign ptw_resp.data_ruser  = '0;

    mmu #(
        .INSTR_TLB_ENTRIES ( TLB_ENTRIES ),
        .DATA_TLB_ENTRIES  ( TLB_ENTRIES ),
        .ASID_WIDTH        ( ASID_WIDTH  )
    ) i_mmu (
        .clk_i                  ( clk                ),
        .rst_ni                 ( ~rst               ),
        .flush_i                ( flush              ),
        .enable_translation_i   ( 1'b1               ),
        .en_ld_st_translation_i ( 1'b1               ),
        .icache_areq_i          ( icache_areq_in     ),
        .icache_areq_o          ( icache_areq_out    ),
        .misaligned_ex_i        ( '0                 ),
        .lsu_req_i              ( lsu_req            ),
        .lsu_vaddr_i            ( lsu_vaddr          ),
        .lsu_is_store_i         ( lsu_is_store       ),
        .lsu_dtlb_hit_o         ( lsu_dtlb_hit       ),
        .lsu_dtlb_ppn_o         ( lsu_dtlb_ppn       ),
        .lsu_valid_o            ( lsu_valid          ),
        .lsu_paddr_o            ( lsu_paddr          ),
        .lsu_exception_o        ( lsu_ex             ),
        .priv_lvl_i             ( riscv::PRIV_LVL_S  ),
        .ld_st_priv_lvl_i       ( user ? riscv::PRIV_LVL_U : riscv::PRIV_LVL_S ),
        .sum_i                  ( sum                ),
        .mxr_i                  ( mxr                ),
        .satp_ppn_i             ( satp_ppn           ),
        .asid_i                 ( asid               ),
        .asid_to_be_flushed_i   ( flush_asid         ),
        .vaddr_to_be_flushed_i  ( flush_vaddr        ),
        .flush_tlb_i            ( flush              ),
        .itlb_miss_o            ( itlb_miss          ),
        .dtlb_miss_o            ( dtlb_miss          ),
        .req_port_i             ( ptw_resp           ),
        .req_port_o             ( ptw_req            ),
        .pmpcfg_i               ( pmpcfg             ),
        .pmpaddr_i              ( pmpaddr            )
    );
endmodule
