//! Uniform, bounds-checked access to packet bytes for TC and XDP programs.
//!
//! Headers in the linear area (nearly always) are read directly, which
//! costs no helper call; anything else goes through the kernel's
//! `load_bytes` helpers, which copy from linear and paged data alike (a TC
//! packet's headers need not be in the linear area) and fail cleanly past
//! the end.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use cas_audit_common::sizes::PAYLOAD_BYTES;
use core::mem::{size_of, MaybeUninit};

/// Offsets up to this are tried with direct access; the bound also keeps
/// the verifier's view of packet-pointer arithmetic simple.
const DIRECT_MAX_OFFSET: u32 = 512;

/// Reads a `T` at `start + offset` when it lies before `end`.
#[inline(always)]
fn direct<T: Copy>(start: usize, end: usize, offset: u32) -> Option<T> {
    if offset > DIRECT_MAX_OFFSET {
        return None;
    }
    let p = start + offset as usize;
    if p + size_of::<T>() > end {
        return None;
    }
    // SAFETY: [p, p + size_of::<T>()) is inside the packet's linear data.
    Some(unsafe { core::ptr::read_unaligned(p as *const T) })
}

/// Reads the byte at `start + base + add` when it lies before `end`;
/// `add` is at most 63 (a TCP data offset, an option's length). The
/// pointer is bounds-checked after the variable part is added, the form
/// the verifier follows for a variable packet offset.
#[inline(always)]
fn direct_byte(start: usize, end: usize, base: u32, add: u32) -> Option<u8> {
    if base > DIRECT_MAX_OFFSET {
        return None;
    }
    let p = start + base as usize + (add & 0x3f) as usize;
    if p + 1 > end {
        return None;
    }
    // SAFETY: p is inside the packet's linear data.
    Some(unsafe { *(p as *const u8) })
}

/// The bounds check of [`Packet::copy_out`]: `n` itself for 1 to
/// [`PAYLOAD_BYTES`], written as a mask (a power of two) and an add, which
/// the verifier follows to the register the helper gets (a compare may be
/// made on another copy of the value).
#[inline(always)]
fn bounded(n: u32) -> Option<u32> {
    if n == 0 || n > PAYLOAD_BYTES as u32 {
        return None;
    }
    Some(((n - 1) & (PAYLOAD_BYTES as u32 - 1)) + 1)
}

/// A packet the datapath can parse.
pub trait Packet: EbpfContext {
    /// Length of the frame from the Ethernet header on.
    fn frame_len(&self) -> u32;
    /// Wire segments this packet stands for (GSO/GRO super-packets > 1).
    fn segments(&self) -> u32;
    /// Interface index the packet is on.
    fn ifindex(&self) -> u32;
    /// Interface a packet on its way out arrived on (`__sk_buff.ingress_ifindex`,
    /// the kernel's `skb_iif`): 0 for a packet this host made. Only
    /// meaningful at egress.
    fn arrived_on(&self) -> u32;
    /// Copies `size_of::<T>()` bytes at `offset`; `Err` when the packet is shorter.
    fn load<T: Copy>(&self, offset: u32) -> Result<T, ()>;
    /// Reads a `T` at `offset` of the linear area only (no helper call);
    /// `None` past its end.
    fn peek<T: Copy>(&self, offset: u32) -> Option<T>;
    /// The byte at `base + add` of the linear area only (no helper call),
    /// for an offset known only at run time; `add` is taken modulo 64.
    /// `None` past the linear area's end.
    fn peek_byte(&self, base: u32, add: u32) -> Option<u8>;
    /// The byte at `offset`, linear or paged, read by the load-bytes helper
    /// (the offset may be any value the verifier knows nothing of: the
    /// helper checks it); `None` past the packet's end.
    fn load_byte(&self, offset: u32) -> Option<u8>;
    /// Copies `n` bytes at `offset` to `dst`, linear and paged data alike;
    /// false when `n` is 0 or above [`PAYLOAD_BYTES`] or the packet is
    /// shorter.
    ///
    /// # Safety
    /// `dst` must be valid for [`PAYLOAD_BYTES`] bytes of writes.
    unsafe fn copy_out(&self, offset: u32, dst: *mut u8, n: u32) -> bool;
}

impl Packet for TcContext {
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }

    #[inline(always)]
    fn segments(&self) -> u32 {
        // SAFETY: the context pointer is the kernel's __sk_buff.
        let segs = unsafe { (*(self.skb.skb as *const __sk_buff)).gso_segs };
        if segs == 0 {
            1
        } else {
            segs
        }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*(self.skb.skb as *const __sk_buff)).ifindex }
    }

    #[inline(always)]
    fn arrived_on(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*(self.skb.skb as *const __sk_buff)).ingress_ifindex }
    }

    #[inline(always)]
    fn peek<T: Copy>(&self, offset: u32) -> Option<T> {
        direct(self.data(), self.data_end(), offset)
    }

    #[inline(always)]
    fn peek_byte(&self, base: u32, add: u32) -> Option<u8> {
        direct_byte(self.data(), self.data_end(), base, add)
    }

    #[inline(always)]
    fn load<T: Copy>(&self, offset: u32) -> Result<T, ()> {
        if let Some(v) = direct(self.data(), self.data_end(), offset) {
            return Ok(v);
        }
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes or fails.
        let rc = unsafe {
            bpf_skb_load_bytes(
                self.as_ptr(),
                offset,
                out.as_mut_ptr() as *mut _,
                size_of::<T>() as u32,
            )
        };
        if rc == 0 {
            // SAFETY: fully initialised by the helper.
            Ok(unsafe { out.assume_init() })
        } else {
            Err(())
        }
    }

    #[inline(always)]
    fn load_byte(&self, offset: u32) -> Option<u8> {
        let mut b = 0u8;
        // SAFETY: the helper writes at most the one byte given.
        let rc =
            unsafe { bpf_skb_load_bytes(self.as_ptr(), offset, &mut b as *mut u8 as *mut _, 1) };
        (rc == 0).then_some(b)
    }

    #[inline(always)]
    unsafe fn copy_out(&self, offset: u32, dst: *mut u8, n: u32) -> bool {
        let Some(n) = bounded(n) else {
            return false;
        };
        bpf_skb_load_bytes(self.as_ptr(), offset, dst as *mut _, n) == 0
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }

    #[inline(always)]
    fn segments(&self) -> u32 {
        1
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn arrived_on(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn peek<T: Copy>(&self, offset: u32) -> Option<T> {
        direct(self.data(), self.data_end(), offset)
    }

    #[inline(always)]
    fn peek_byte(&self, base: u32, add: u32) -> Option<u8> {
        direct_byte(self.data(), self.data_end(), base, add)
    }

    #[inline(always)]
    fn load<T: Copy>(&self, offset: u32) -> Result<T, ()> {
        if let Some(v) = direct(self.data(), self.data_end(), offset) {
            return Ok(v);
        }
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes or fails.
        let rc = unsafe {
            bpf_xdp_load_bytes(
                self.ctx,
                offset,
                out.as_mut_ptr() as *mut _,
                size_of::<T>() as u32,
            )
        };
        if rc == 0 {
            // SAFETY: fully initialised by the helper.
            Ok(unsafe { out.assume_init() })
        } else {
            Err(())
        }
    }

    #[inline(always)]
    fn load_byte(&self, offset: u32) -> Option<u8> {
        let mut b = 0u8;
        // SAFETY: the helper writes at most the one byte given.
        let rc = unsafe { bpf_xdp_load_bytes(self.ctx, offset, &mut b as *mut u8 as *mut _, 1) };
        (rc == 0).then_some(b)
    }

    #[inline(always)]
    unsafe fn copy_out(&self, offset: u32, dst: *mut u8, n: u32) -> bool {
        let Some(n) = bounded(n) else {
            return false;
        };
        bpf_xdp_load_bytes(self.ctx, offset, dst as *mut _, n) == 0
    }
}
