"""Audio decoding: any file ffmpeg reads -> 16 kHz mono float32.

Two decoders share one contract. ``ffmpeg`` (through ffmpeg-python, one process per file)
reads every format. ``soundfile`` (libsndfile in-process, then soxr 'HQ' resampling, as
``librosa.load`` does) is several times cheaper on short files because no process starts;
``auto`` uses it for the formats libsndfile reads and falls back to ffmpeg on any error.
The errors, checks and the libsndfile decoder live in :mod:`pipelines.decode.read` (the helper
process imports them from there) and are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import threading

import numpy as np

from model import dsp
from pipelines.decode import helper as decode_worker
from pipelines.decode.read import (  # noqa: F401  (re-exported: audio.DecodeError and the rest)
    DECODE_BLOCK_FRAMES,
    DEFAULT_MAX_BYTES,
    MAX_DECODED_SAMPLES,
    MAX_PEAK,
    CappedReader,
    DecodeError,
    DecodeLimit,
    TransientError,
    check_readable,
    check_samples,
    check_size,
    decode_with_soundfile,
    file_size,
    local_path,
    one_line,
    open_remote,
)

SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")
DECODERS = ("auto", "ffmpeg", "soundfile")


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # (n_samples,) float32 at dsp.SAMPLE_RATE
    decoder: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / dsp.SAMPLE_RATE


def ffmpeg_executable() -> str:
    """Path of the ffmpeg binary: the system's when on PATH, else the imageio-ffmpeg wheel's."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _pump(source, sink_fd: int, errors: list) -> None:
    """Copy ``source`` into ffmpeg's stdin; ffmpeg may stop reading early (``-t`` reached)."""
    try:
        with source, os.fdopen(sink_fd, "wb") as sink:
            while True:
                chunk = source.read(1 << 20)
                if not chunk:
                    break
                sink.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except Exception as error:  # reported after ffmpeg ends: a cap or a read error is the reason
        errors.append(error)


def decode_with_ffmpeg(
    uri: str, *, max_duration_s: float, timeout_s: float, max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """Decode with an ffmpeg subprocess to 16 kHz mono float32.

    Parameters
    ----------
    uri : str
        Local path, file:// or a remote URI (whose bytes are streamed to ffmpeg's stdin).
    max_duration_s : float
        Only the first ``max_duration_s`` seconds are decoded (ffmpeg stops reading there).
    timeout_s : float
        The process is killed after this many seconds and :class:`DecodeError` raised.
    max_bytes : int
        A remote object larger than this is refused; reading never goes past it.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32
    """
    import ffmpeg

    path = local_path(uri)
    if path is not None:
        check_readable(path)
        # The 'file:' protocol stops ffmpeg from reading a colon in a file name as a protocol.
        stream, source = ffmpeg.input("file:" + os.path.abspath(path)), None
    else:
        stream, source = ffmpeg.input("pipe:0"), open_remote(uri, max_bytes)
    stream = stream.output(
        "pipe:1",
        format="f32le",
        acodec="pcm_f32le",
        ac=1,
        ar=dsp.SAMPLE_RATE,
        t=max_duration_s,
        # Normalise the downmix so stereo -> mono is the mean of the channels, as librosa's
        # to_mono; ffmpeg's default keeps each channel at -3 dB, a louder mix.
        rematrix_maxval=1.0,
    ).global_args("-nostdin" if source is None else "-hide_banner", "-loglevel", "error")
    stdin, pump, errors = subprocess.DEVNULL, None, []
    if source is not None:
        stdin, sink = os.pipe()  # our own pipe: communicate() would close a Popen stdin we still feed
    process = subprocess.Popen(
        stream.compile(cmd=ffmpeg_executable()), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if source is not None:
        os.close(stdin)
        pump = threading.Thread(target=_pump, args=(source, sink, errors), daemon=True)
        pump.start()
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise DecodeError(f"ffmpeg timed out after {timeout_s:g} s")
    finally:
        if pump is not None:
            pump.join(timeout=5)
    if errors:
        raise errors[0]
    if process.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        # without ffmpeg's "@ 0x55a8..." addresses: the same file gives the same reason in every run
        reason = re.sub(r"\[([^\]@]*?) @ 0x[0-9a-f]+\]", r"[\1]", message[-1]) if message else None
        raise DecodeError(f"ffmpeg failed: {reason or f'exit {process.returncode}'}")
    samples = np.frombuffer(out, dtype="<f4")
    if samples.size == 0:
        raise DecodeError("no audio samples decoded")
    check_samples(samples)
    return samples.astype(np.float32, copy=False)


def decode_audio(
    uri: str,
    *,
    max_duration_s: float = 600.0,
    timeout_s: float = 120.0,
    decoder: str = "auto",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DecodedAudio:
    """Decode one track to 16 kHz mono float32 with the chosen decoder.

    Parameters
    ----------
    uri : str
        Local path, file:// or gs:// URI.
    max_duration_s : float
        Decode at most this many seconds from the start (long files are never loaded whole).
    timeout_s : float
        Per-file limit for each decoder: the ffmpeg process, and the helper process that runs
        libsndfile (:mod:`pipelines.decode.helper`), are killed when it runs out.
    decoder : {'auto', 'ffmpeg', 'soundfile'}
        ``auto``: soundfile for the extensions libsndfile reads, ffmpeg for the rest and as
        the fallback when soundfile fails (not when it times out).
    max_bytes : int
        Files larger than this are refused; remote ones are streamed and never read past it.

    Returns
    -------
    DecodedAudio

    Raises
    ------
    DecodeError
        With a one-line reason, when no decoder can read the file.
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if max_duration_s <= 0:
        raise ValueError(f"max_duration_s must be positive, got {max_duration_s}")
    path = local_path(uri)
    if path is not None:
        check_readable(path)
    check_size(uri, max_bytes)
    use_soundfile = decoder == "soundfile" or (decoder == "auto" and uri.lower().endswith(SOUNDFILE_EXTENSIONS))
    if use_soundfile:
        try:
            samples = decode_worker.decode(timeout_s, uri=uri, max_duration_s=max_duration_s, max_bytes=max_bytes)
            return DecodedAudio(samples, "soundfile")
        except decode_worker.WorkerTimeout:
            raise DecodeError(f"soundfile timed out after {timeout_s:g} s") from None
        except DecodeLimit:
            raise
        except (DecodeError, EOFError, BrokenPipeError) as error:
            if decoder == "soundfile":
                raise (
                    error if isinstance(error, DecodeError) else DecodeError("soundfile crashed on this file")
                ) from error
    return DecodedAudio(
        decode_with_ffmpeg(uri, max_duration_s=max_duration_s, timeout_s=timeout_s, max_bytes=max_bytes), "ffmpeg"
    )
