// worker/kernels/counter_init.cu built for the CPU emulation (LF_CUDA_EMULATION,
// worker/kernels/cuda_emulation.h): the same source, run on host memory.
#include "worker/kernels/counter_init.cu"
