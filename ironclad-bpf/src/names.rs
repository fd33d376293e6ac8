//! The names of every map and program of the embedded objects, checked at compile time
//! against the skeletons libbpf-cargo generates from the compiled objects (in the
//! workspace's `ironclad-bpf-check` crate, off the build's critical path).
//!
//! Each constant (maps, programs, and the BTF struct types the Shield reads sizes from)
//! is spelled exactly as in C (so a search for `ic_v4_fast` finds the C
//! map, its Rust name and every use of it). The lists are in `names_list.rs`, which
//! `ironclad-bpf-check` includes too: there each module gets a function that touches the
//! skeleton field of every name it lists, so a map or program renamed or removed in
//! `bpf-src/` is a compile error of the workspace's build instead of a `NoSuchMap` at
//! run time.
//!
//! ```
//! use ironclad_bpf::names;
//!
//! assert_eq!(names::shield::ic_shield_config, "ic_shield_config");
//! assert_eq!(names::egress::ic_connect4, "ic_connect4");
//! ```

// The constants keep the C spelling on purpose (see above).
#![allow(non_upper_case_globals)]

macro_rules! object_names {
    (
        $(#[$doc:meta])*
        $module:ident = $skel:ident :: {
            $maps:ident: [$($map:ident),* $(,)?],
            $progs:ident: [$($prog:ident),* $(,)?]
            $(, types: [$($ty:ident),* $(,)?])? $(,)?
        }
    ) => {
        $(#[$doc])*
        pub mod $module {
            $(
                #[doc = concat!("The map `", stringify!($map), "`.")]
                pub const $map: &str = stringify!($map);
            )*
            $(
                #[doc = concat!("The program `", stringify!($prog), "`.")]
                pub const $prog: &str = stringify!($prog);
            )*
            $($(
                #[doc = concat!("The BTF type `struct ", stringify!($ty), "`.")]
                pub const $ty: &str = stringify!($ty);
            )*)?
        }
    };
}

include!("names_list.rs");
