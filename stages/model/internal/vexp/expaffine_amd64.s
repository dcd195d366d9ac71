//go:build !purego

#include "textflag.h"

DATA expLo<>+0(SB)/4, $0xc2ae0000
DATA expLo<>+4(SB)/4, $0xc2ae0000
DATA expLo<>+8(SB)/4, $0xc2ae0000
DATA expLo<>+12(SB)/4, $0xc2ae0000
DATA expLo<>+16(SB)/4, $0xc2ae0000
DATA expLo<>+20(SB)/4, $0xc2ae0000
DATA expLo<>+24(SB)/4, $0xc2ae0000
DATA expLo<>+28(SB)/4, $0xc2ae0000
GLOBL expLo<>(SB), RODATA|NOPTR, $32

DATA expHi<>+0(SB)/4, $0x42b10000
DATA expHi<>+4(SB)/4, $0x42b10000
DATA expHi<>+8(SB)/4, $0x42b10000
DATA expHi<>+12(SB)/4, $0x42b10000
DATA expHi<>+16(SB)/4, $0x42b10000
DATA expHi<>+20(SB)/4, $0x42b10000
DATA expHi<>+24(SB)/4, $0x42b10000
DATA expHi<>+28(SB)/4, $0x42b10000
GLOBL expHi<>(SB), RODATA|NOPTR, $32

#define BCAST(bits, reg) MOVL bits, AX; VMOVD AX, X15; VPBROADCASTD X15, reg

// func expAffineAVX2(dst, src *float32, n int, a, b float32) float32
// dst[i] = exp(a·src[i] + b) for n (a positive multiple of 8) elements, with
// the polynomial of expf evaluated in FMA; returns their sum, accumulated in
// eight lanes combined in a fixed order.
TEXT ·expAffineAVX2(SB), NOSPLIT, $0-36
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS a+24(FP), Y0
	VBROADCASTSS b+28(FP), Y6
	BCAST($0x3fb8aa3b, Y1)  // log2e
	BCAST($0x4b400000, Y2)  // magic 1.5·2^23
	BCAST($0x3f317200, Y3)  // ln2hi
	BCAST($0x35bfbe8e, Y4)  // ln2lo
	BCAST($0x3ab60b61, Y7)  // 1/720
	BCAST($0x3c088889, Y8)  // 1/120
	BCAST($0x3d2aaaab, Y9)  // 1/24
	BCAST($0x3e2aaaab, Y10) // 1/6
	BCAST($0x3f000000, Y11) // 0.5
	BCAST($0x3f800000, Y12) // 1
	VXORPS Y13, Y13, Y13

loop:
	VMOVUPS (SI), Y14
	VFMADD213PS Y6, Y0, Y14 // x = a·src + b
	VMAXPS expLo<>(SB), Y14, Y14
	VMINPS expHi<>(SB), Y14, Y14
	VMOVAPS Y14, Y15
	VFMADD213PS Y2, Y1, Y15  // t = x·log2e + magic
	VSUBPS Y2, Y15, Y5       // n = t - magic
	VFNMADD231PS Y3, Y5, Y14 // r = x - n·ln2hi
	VFNMADD231PS Y4, Y5, Y14 // r -= n·ln2lo
	VMOVAPS Y7, Y5
	VFMADD213PS Y8, Y14, Y5
	VFMADD213PS Y9, Y14, Y5
	VFMADD213PS Y10, Y14, Y5
	VFMADD213PS Y11, Y14, Y5
	VFMADD213PS Y12, Y14, Y5
	VFMADD213PS Y12, Y14, Y5
	VPSUBD Y2, Y15, Y15
	VPSLLD $23, Y15, Y15
	VPADDD Y15, Y5, Y5
	VMOVUPS Y5, (DI)
	VADDPS Y5, Y13, Y13
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ loop

	VEXTRACTF128 $1, Y13, X14
	VADDPS X14, X13, X13
	VPERMILPS $0x4e, X13, X14
	VADDPS X14, X13, X13
	VPERMILPS $0xb1, X13, X14
	VADDPS X14, X13, X13
	VZEROUPPER
	MOVSS X13, ret+32(FP)
	RET
