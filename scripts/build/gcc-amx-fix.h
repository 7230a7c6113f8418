/* Force-included (-include) into llama.cpp's C++ sources when scripts/_venv.sh builds llama-cpp-python.
 *
 * GCC 12 (and, as far as we know, later releases) declares AMX's tile intrinsics with memory operands that
 * are too narrow:
 * _tile_loadconfig's asm says it reads 8 bytes of the 64-byte tile configuration, and _tile_loadd's
 * says it reads no memory at all. At -O2 GCC 12 then drops the stores that fill llama.cpp's tile
 * configuration (it lives on the stack), `ldtilecfg` loads garbage and the process dies with SIGSEGV
 * on the first prompt of more than one token (ggml-org/llama.cpp#20824). These definitions say what
 * the instructions really read, which is right for any GCC. Clang is left alone. Whatever the compiler,
 * localchat's AMX self-test (localchat/engine/amx.py) checks the result before AMX is used.
 */
#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>

struct localchat_tilecfg_bytes { unsigned char bytes[64]; };

#undef _tile_loadconfig
#define _tile_loadconfig(config) \
  __asm__ volatile ("ldtilecfg\t%X0" :: "m" (*(const localchat_tilecfg_bytes *) (config)))

#undef _tile_loadd_internal
#define _tile_loadd_internal(dst, base, stride)                                      \
  __asm__ volatile                                                                   \
  ("{tileloadd\t(%0,%1,1), %%tmm"#dst"|tileloadd\t%%tmm"#dst", [%0+%1*1]}"           \
   :: "r" ((const void *) (base)), "r" ((long) (stride)) : "memory")

#undef _tile_stream_loadd_internal
#define _tile_stream_loadd_internal(dst, base, stride)                               \
  __asm__ volatile                                                                   \
  ("{tileloaddt1\t(%0,%1,1), %%tmm"#dst"|tileloaddt1\t%%tmm"#dst", [%0+%1*1]}"       \
   :: "r" ((const void *) (base)), "r" ((long) (stride)) : "memory")
#endif
