//! Each name of `ironclad_bpf::names` touched on the skeleton of its object: a map or
//! program renamed or removed in `bpf-src/` is a compile error here.

// The lists' module names keep the C spelling, as in ironclad_bpf::names.
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
        mod $module {
            /// Never called: it compiles only while every map and program listed is a
            /// field of the object's skeleton and every type is one of its BTF types.
            #[allow(dead_code)]
            fn every_name_is_in_the_skeleton(
                maps: &crate::skel::$skel::$maps<'_>,
                progs: &crate::skel::$skel::$progs<'_>,
            ) {
                $( let _ = &maps.$map; )*
                $( let _ = &progs.$prog; )*
                $($( let _: Option<crate::skel::$skel::types::$ty> = None; )*)?
            }
        }
    };
}

include!("../../ironclad-bpf/src/names_list.rs");
