//! The C API of PocketSphinx 5prealpha (Debian `libpocketsphinx3`) and
//! SphinxBase (`libsphinxbase3`), resolved at run time with `dlopen`.
//!
//! Only the non-variadic entry points are used (`cmd_ln_parse_r` rather than
//! `cmd_ln_init`), because Rust cannot portably call C variadics through a
//! function pointer type it has to spell out. The prototypes below follow
//! `pocketsphinx.h` and `sphinxbase/cmd_ln.h` of 0.8+5prealpha (checked
//! against the Debian `-dev` headers): notably `ps_start_utt` takes no
//! utterance id in 5prealpha.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

use libloading::Library;

/// The shared library that holds the decoder.
pub(crate) const POCKETSPHINX_SONAME: &str = "libpocketsphinx.so.3";
/// Its dependency that holds the configuration and logging functions.
pub(crate) const SPHINXBASE_SONAME: &str = "libsphinxbase.so.3";
/// What to run when the libraries or the model are missing.
pub const INSTALL_HINT: &str = "apt-get install libpocketsphinx3 pocketsphinx-en-us";

/// `cmd_ln_t` (opaque).
#[repr(C)]
pub(crate) struct CmdLn {
    _private: [u8; 0],
}

/// `arg_t` (opaque: only passed through from `ps_args` to `cmd_ln_parse_r`).
#[repr(C)]
pub(crate) struct ArgDef {
    _private: [u8; 0],
}

/// `ps_decoder_t` (opaque).
#[repr(C)]
pub(crate) struct PsDecoder {
    _private: [u8; 0],
}

/// `arg_t const *ps_args(void)`
type PsArgsFn = unsafe extern "C" fn() -> *const ArgDef;
/// `cmd_ln_t *cmd_ln_parse_r(cmd_ln_t *inout, arg_t const *defn, int32 argc,
/// char *argv[], int32 strict)`
type CmdLnParseRFn =
    unsafe extern "C" fn(*mut CmdLn, *const ArgDef, i32, *mut *mut c_char, i32) -> *mut CmdLn;
/// `int cmd_ln_free_r(cmd_ln_t *)` (releases one reference).
type CmdLnFreeRFn = unsafe extern "C" fn(*mut CmdLn) -> c_int;
/// `ps_decoder_t *ps_init(cmd_ln_t *config)` (retains `config`).
type PsInitFn = unsafe extern "C" fn(*mut CmdLn) -> *mut PsDecoder;
/// `int ps_free(ps_decoder_t *)`
type PsFreeFn = unsafe extern "C" fn(*mut PsDecoder) -> c_int;
/// `int ps_start_utt(ps_decoder_t *)`
type PsStartUttFn = unsafe extern "C" fn(*mut PsDecoder) -> c_int;
/// `int ps_process_raw(ps_decoder_t *, int16 const *data, size_t n_samples,
/// int no_search, int full_utt)`
type PsProcessRawFn =
    unsafe extern "C" fn(*mut PsDecoder, *const i16, usize, c_int, c_int) -> c_int;
/// `int ps_end_utt(ps_decoder_t *)`
type PsEndUttFn = unsafe extern "C" fn(*mut PsDecoder) -> c_int;
/// `char const *ps_get_hyp(ps_decoder_t *, int32 *out_best_score)`
type PsGetHypFn = unsafe extern "C" fn(*mut PsDecoder, *mut i32) -> *const c_char;
/// `void err_set_logfp(FILE *stream)`; `NULL` disables logging.
type ErrSetLogfpFn = unsafe extern "C" fn(*mut c_void);

/// The resolved entry points. The libraries stay loaded for the life of the
/// process (the value lives in a `static`), so the function pointers never
/// dangle.
pub(crate) struct Api {
    pub ps_args: PsArgsFn,
    pub cmd_ln_parse_r: CmdLnParseRFn,
    pub cmd_ln_free_r: CmdLnFreeRFn,
    pub ps_init: PsInitFn,
    pub ps_free: PsFreeFn,
    pub ps_start_utt: PsStartUttFn,
    pub ps_process_raw: PsProcessRawFn,
    pub ps_end_utt: PsEndUttFn,
    pub ps_get_hyp: PsGetHypFn,
    _pocketsphinx: Library,
    _sphinxbase: Library,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// The PocketSphinx API, loading the libraries on first use. The error names
/// the missing piece and the package that provides it.
pub(crate) fn api() -> Result<&'static Api, String> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn open(soname: &str) -> Result<Library, String> {
    // SAFETY: loading runs the library's initialisers. libpocketsphinx and
    // libsphinxbase are plain C libraries whose ELF constructors only set up
    // static tables; loading them has no other side effects.
    unsafe { Library::new(soname) }
        .map_err(|e| format!("cannot load {soname} ({e}); install it with `{INSTALL_HINT}`"))
}

/// Resolves `name` in `lib` as a `T`.
///
/// # Safety
/// `T` must be the exact function pointer type of the C symbol.
unsafe fn symbol<T: Copy>(lib: &Library, soname: &str, name: &str) -> Result<T, String> {
    // SAFETY: the caller guarantees `T` matches the symbol's C prototype.
    let sym = unsafe { lib.get::<T>(name.as_bytes()) }.map_err(|e| {
        format!(
            "{soname} has no symbol {name} ({e}): expected PocketSphinx 5prealpha \
             (`{INSTALL_HINT}`)"
        )
    })?;
    Ok(*sym)
}

fn load() -> Result<Api, String> {
    // sphinxbase first: pocketsphinx needs it anyway, and a missing
    // sphinxbase is then reported under its own name.
    let sphinxbase = open(SPHINXBASE_SONAME)?;
    let pocketsphinx = open(POCKETSPHINX_SONAME)?;
    let (ps, sb) = (POCKETSPHINX_SONAME, SPHINXBASE_SONAME);
    // SAFETY: each type alias above spells out the prototype from the
    // 5prealpha headers of the symbol it is resolved for.
    let api = unsafe {
        Api {
            ps_args: symbol(&pocketsphinx, ps, "ps_args")?,
            cmd_ln_parse_r: symbol(&sphinxbase, sb, "cmd_ln_parse_r")?,
            cmd_ln_free_r: symbol(&sphinxbase, sb, "cmd_ln_free_r")?,
            ps_init: symbol(&pocketsphinx, ps, "ps_init")?,
            ps_free: symbol(&pocketsphinx, ps, "ps_free")?,
            ps_start_utt: symbol(&pocketsphinx, ps, "ps_start_utt")?,
            ps_process_raw: symbol(&pocketsphinx, ps, "ps_process_raw")?,
            ps_end_utt: symbol(&pocketsphinx, ps, "ps_end_utt")?,
            ps_get_hyp: symbol(&pocketsphinx, ps, "ps_get_hyp")?,
            _pocketsphinx: pocketsphinx,
            _sphinxbase: sphinxbase,
        }
    };
    // SAFETY: same prototype rule as above.
    let err_set_logfp: ErrSetLogfpFn = unsafe { symbol(&api._sphinxbase, sb, "err_set_logfp")? };
    // Silence the library: it logs its whole configuration and per-utterance
    // statistics to stderr. Disabling the global log stream once, here, is
    // preferred over `-logfn /dev/null`, which makes every `cmd_ln_parse_r`
    // and `ps_init` fopen() a new global FILE and fclose() the previous one,
    // a race when decoders are created on several threads while others log.
    // SAFETY: NULL is the documented "disable logging" argument; this runs
    // once, inside the OnceLock initialiser, before any decoder exists.
    unsafe { err_set_logfp(std::ptr::null_mut()) };
    Ok(api)
}
