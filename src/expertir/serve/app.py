"""The page of ``expertir serve``, built with Gradio (the usual way restoration models are
demonstrated), around a :class:`~expertir.serve.restorer.Restorer`.

Design choices:

* **Offline**: Gradio's analytics and its update check are off (``analytics_enabled=False``,
  ``GRADIO_ANALYTICS_ENABLED``), so is Hugging Face telemetry; the theme uses the system's
  fonts, so the page loads nothing from a font CDN; the browser's run history (which can be
  linked to a Hugging Face bucket) is off. Every asset comes from this server.
* **Upload**: a file box (``gr.File``), not an image box: Gradio's image box decodes the
  upload itself before the app sees it, and this app decodes with expertir's hardened reader
  only. Gradio stores the upload in its cache (in a folder named by the file's hash),
  refuses files over ``max_file_size`` and hands over only files from its upload folder.
* **Queue**: both triggers (a new upload, the Restore button) share one queue slot
  (``concurrency_limit=1``), and the queue holds at most ``QUEUE_SIZE`` waiting requests;
  more are refused with "queue is full" instead of piling up in memory.
* **Errors** a user can fix (:class:`~expertir.errors.ExpertirError`) are shown on the page
  as ``gr.Error`` (HTML-escaped: Gradio renders the message as HTML); the server goes on.
"""

from __future__ import annotations

import html
import os

from expertir.errors import ExpertirError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:
    import gradio as gr
except ImportError as exc:  # the optional 'demo' extra
    raise ExpertirError(f"the browser demo needs Gradio ({exc.name} is not installed): "
                        "pip install 'expertir[demo]'") from None

from expertir.imageio import IMAGE_EXTENSIONS  # noqa: E402
from expertir.serve.restorer import Restorer  # noqa: E402

#: Requests that may wait in the queue; more are refused.
QUEUE_SIZE = 8
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
SYSTEM_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]

INTRO = """# expertir: all-in-one image restoration
Drop a photo with noise, rain, haze, blur or low light. The model restores it **without
being told which degradation** it has, estimates which one it saw and shows how it routed
each region. It all runs on the machine serving this page; nothing goes to the internet."""


def theme():
    """Gradio's default look with the system's fonts (nothing loaded from a font service)."""
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO)


def build_app(restorer: Restorer, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """The page: upload, model, Restore; before/after slider, time, estimate, routing
    figure, download."""

    def restore(path, choice, progress=gr.Progress()):
        if not path:
            raise gr.Error("Upload an image first.", print_exception=False)
        yield None, "Working…", None, None, gr.DownloadButton(visible=False)
        try:
            result = restorer.run(path, choice, report=lambda f, text: progress(f, desc=text))
        except ExpertirError as exc:
            raise gr.Error(html.escape(str(exc)), print_exception=False) from None
        yield ((result.before, result.after), result.summary(), result.estimate,
               str(result.figure), gr.DownloadButton(value=str(result.png), visible=True))

    with gr.Blocks(title="expertir — image restoration", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image (drop a file or click)", type="filepath",
                                 file_types=list(IMAGE_EXTENSIONS), elem_id="upload")
                model = gr.Dropdown(restorer.choices, value=restorer.default, label="Model",
                                    elem_id="model")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
                summary = gr.Markdown(elem_id="summary")
                download = gr.DownloadButton("Download the restored PNG", visible=False,
                                             elem_id="download")
                estimate = gr.Label(label="Blind degradation estimate", num_top_classes=4,
                                    elem_id="estimate")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Before / after (drag the handle)", type="numpy",
                                        format="png", interactive=False, elem_id="slider")
        figure = gr.Image(label="Estimate and routing maps", type="filepath", format="png",
                          interactive=False, elem_id="figure")
        gr.Markdown(f"Uploads: {', '.join(IMAGE_EXTENSIONS)}. Restorations run one at a time; "
                    f"at most {queue_size} wait in the queue.")
        outputs = [slider, summary, estimate, figure, download]
        queued = {"concurrency_limit": 1, "concurrency_id": "restore"}
        upload.upload(restore, [upload, model], outputs, api_name="restore_on_upload",
                      api_visibility="private", **queued)
        button.click(restore, [upload, model], outputs, api_name="restore", **queued)
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    return app


def launch(restorer: Restorer, host: str = "127.0.0.1", port: int = 7860,
           max_upload: int = 20_000_000, block: bool = True, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """Serve the page on ``host``:``port``. Uploads over ``max_upload`` bytes are refused,
    and so are requests while ``queue_size`` others wait. With ``block`` this returns when
    the server stops (Ctrl+C); else the server runs on in the background and the app is
    returned (``app.close()`` stops it)."""
    app = build_app(restorer, queue_size)
    try:
        app.launch(server_name=host, server_port=port, max_file_size=max_upload,
                   theme=theme(), share=False, inbrowser=False, show_error=False, quiet=True,
                   footer_links=["api", "settings"], run_history=False, ssr_mode=False,
                   pwa=False, mcp_server=False, enable_monitoring=False,
                   prevent_thread_lock=not block)
    except OSError as exc:
        reason = "the port is in use" if "empty port" in str(exc) else str(exc).splitlines()[0]
        raise ExpertirError(f"cannot serve on {host}:{port}: {reason}; choose another --port") from None
    return app
