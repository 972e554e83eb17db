// The "Model Mesh" sidebar: the instance's capacity bar, live tables of models and vmodels (polled
// while the sidebar is visible), a register form and a message line that shows errors in full.
import type { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  IModelStatus,
  IOverview,
  IVModel,
  MODEL_TYPES,
  MeshError,
  ago,
  el,
  humanBytes,
  postJSON,
  requestAPI
} from './api';

export const POLL_MS = 2000;

export interface ISidebarActions {
  openTest(model: string): void;
  applyYaml(): void;
}

export class MeshSidebar extends Widget {
  constructor(private actions: ISidebarActions) {
    super();
    this.id = 'kserve-mesh-sidebar';
    this.addClass('kserve-mesh-sidebar');
    this.title.caption = 'Model Mesh';
    this.build();
  }

  /** The models as of the last refresh (the test pane lists them). */
  get overview(): IOverview | null {
    return this._overview;
  }

  /** Show a result (kind 'ok'/'info') or an error, in full, on the message line. */
  showMessage(text: string, kind: 'ok' | 'info' | 'error' = 'info'): void {
    this._message.textContent = text;
    this._message.className = `kserve-mesh-message kserve-mesh-${kind}`;
    this._message.hidden = !text;
  }

  async refresh(): Promise<void> {
    try {
      this._overview = await requestAPI<IOverview>('overview');
      this._connError.hidden = true;
      this.render(this._overview);
    } catch (error) {
      const message = error instanceof MeshError ? error.message : String(error);
      this._connError.textContent = `Cannot list the mesh's models: ${message}`;
      this._connError.hidden = false;
    }
  }

  protected onAfterShow(msg: Message): void {
    void this.refresh();
    this.startPolling();
  }

  protected onAfterAttach(msg: Message): void {
    if (this.isVisible) {
      void this.refresh();
      this.startPolling();
    }
  }

  protected onAfterHide(msg: Message): void {
    this.stopPolling();
  }

  protected onBeforeDetach(msg: Message): void {
    this.stopPolling();
  }

  dispose(): void {
    this.stopPolling();
    super.dispose();
  }

  private startPolling(): void {
    if (this._timer === null) {
      this._timer = window.setInterval(() => void this.refresh(), POLL_MS);
    }
  }

  private stopPolling(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  private build(): void {
    const root = this.node;
    const header = el('div', 'kserve-mesh-header');
    header.appendChild(el('span', 'kserve-mesh-heading', 'Model Mesh'));
    const refresh = el('button', 'jp-Button jp-mod-styled jp-mod-reject kserve-mesh-refresh', 'Refresh');
    refresh.onclick = () => void this.refresh();
    header.appendChild(refresh);
    root.appendChild(header);
    root.appendChild(this._url);

    const capacity = el('div', 'kserve-mesh-capacity');
    capacity.appendChild(this._capacityUsed);
    root.appendChild(capacity);
    root.appendChild(this._capacityText);
    this._connError.hidden = true;
    root.appendChild(this._connError);
    this._message.hidden = true;
    root.appendChild(this._message);

    root.appendChild(el('h3', 'kserve-mesh-section', 'Models'));
    root.appendChild(this._models);
    root.appendChild(el('h3', 'kserve-mesh-section', 'VModels'));
    root.appendChild(this._vmodels);
    root.appendChild(this.registerForm());

    const apply = el('button', 'jp-Button jp-mod-styled jp-mod-reject kserve-mesh-apply', 'Apply InferenceService YAML (open editor)');
    apply.title = 'Apply the InferenceService YAML of the editor in the main area to the mesh';
    apply.onclick = () => this.actions.applyYaml();
    root.appendChild(apply);
  }

  private registerForm(): HTMLElement {
    const form = el('details', 'kserve-mesh-register');
    form.appendChild(el('summary', '', 'Register a model'));
    const id = el('input', 'jp-mod-styled kserve-mesh-register-id', '', { placeholder: 'model id' });
    const type = el('select', 'jp-mod-styled kserve-mesh-register-type');
    for (const t of MODEL_TYPES) {
      type.appendChild(el('option', '', t, { value: t }));
    }
    const path = el('input', 'jp-mod-styled kserve-mesh-register-path', '', {
      placeholder: 's3://bucket/model or a path in Jupyter’s root'
    });
    const load = el('input', 'kserve-mesh-register-load', '', { type: 'checkbox' });
    load.checked = true;
    const loadLabel = el('label', 'kserve-mesh-register-load-label');
    loadLabel.appendChild(load);
    loadLabel.appendChild(document.createTextNode(' load now'));
    const button = el('button', 'jp-Button jp-mod-styled jp-mod-accept kserve-mesh-register-submit', 'Register');
    button.onclick = async () => {
      const modelId = id.value.trim();
      if (!modelId) {
        this.showMessage('A model id is required.', 'error');
        return;
      }
      button.disabled = true;
      try {
        await postJSON(
          `models/${encodeURIComponent(modelId)}`,
          { type: type.value, path: path.value.trim(), loadNow: load.checked },
          'PUT'
        );
        this.showMessage(`registered '${modelId}' (${type.value})`, 'ok');
        await this.refresh();
      } catch (error) {
        this.showMessage(`Register '${modelId}' failed: ${(error as Error).message}`, 'error');
      } finally {
        button.disabled = false;
      }
    };
    for (const [label, input] of [
      ['Model id', id],
      ['Type', type],
      ['Storage', path]
    ] as [string, HTMLElement][]) {
      const row = el('label', 'kserve-mesh-field');
      row.appendChild(el('span', '', label));
      row.appendChild(input);
      form.appendChild(row);
    }
    form.appendChild(loadLabel);
    form.appendChild(button);
    return form;
  }

  private render(o: IOverview): void {
    this._url.textContent = `at ${o.url}`;
    const used = Number(o.status.usedBytes || 0);
    const capacity = Number(o.status.capacityBytes || 0);
    const pct = capacity > 0 ? Math.min(100, (100 * used) / capacity) : 0;
    this._capacityUsed.style.width = `${pct.toFixed(1)}%`;
    this._capacityUsed.setAttribute('data-used', String(used));
    this._capacityUsed.setAttribute('data-capacity', String(capacity));
    this._capacityText.textContent =
      `${humanBytes(used, '0 B')} of ${humanBytes(capacity, '?')} used (${pct.toFixed(0)}%), ` +
      `${o.status.modelsLoaded ?? 0} loaded, ${o.models.length} registered`;
    this.renderModels(o.models, o.time);
    this.renderVModels(o.vmodels);
  }

  private renderModels(models: IModelStatus[], now: number): void {
    // One card per model (the sidebar is narrow): id, state and a Test button; then type, size,
    // copies and last use; then every distinct error, in full.
    const list = el('div', 'kserve-mesh-models');
    const sorted = [...models].sort((a, b) => a.modelId.localeCompare(b.modelId));
    for (const m of sorted) {
      const card = el('div', 'kserve-mesh-model', '', { 'data-model-id': m.modelId, 'data-state': m.status });
      const top = card.appendChild(el('div', 'kserve-mesh-card-top'));
      top.appendChild(el('span', 'kserve-mesh-id', m.modelId, { title: m.modelInfo?.path || '' }));
      top.appendChild(el('span', `kserve-mesh-state kserve-mesh-state-${m.status}`, m.status));
      const test = el('button', 'jp-Button jp-mod-styled jp-mod-reject kserve-mesh-test', 'Test');
      test.onclick = () => this.actions.openTest(m.modelId);
      top.appendChild(test);
      const copies = m.copies ?? 0;
      card.appendChild(
        el(
          'div',
          'kserve-mesh-details',
          [
            m.modelInfo?.type || '?',
            humanBytes(m.sizeBytes, 'size unknown'),
            `${copies} ${copies === 1 ? 'copy' : 'copies'}`,
            `last used ${ago(m.lastUsedTime, now)}`
          ].join(' · ')
        )
      );
      const errors = Array.from(new Set(m.errors || []));
      if (errors.length) {
        card.appendChild(el('div', 'kserve-mesh-errors', errors.join('\n')));
      }
      list.appendChild(card);
    }
    if (!sorted.length) {
      list.appendChild(el('div', 'kserve-mesh-empty', 'No models registered.'));
    }
    this._models.replaceChildren(list);
  }

  private renderVModels(vmodels: IVModel[]): void {
    const list = el('div', 'kserve-mesh-vmodels');
    for (const v of [...vmodels].sort((a, b) => a.vModelId.localeCompare(b.vModelId))) {
      const card = el('div', 'kserve-mesh-vmodel', '', { 'data-vmodel-id': v.vModelId, 'data-state': v.status || '' });
      const top = card.appendChild(el('div', 'kserve-mesh-card-top'));
      top.appendChild(el('span', 'kserve-mesh-id', v.vModelId));
      top.appendChild(el('span', `kserve-mesh-state kserve-mesh-state-${v.status}`, v.status || ''));
      const test = el('button', 'jp-Button jp-mod-styled jp-mod-reject kserve-mesh-test', 'Test');
      test.onclick = () => this.actions.openTest(v.vModelId);
      top.appendChild(test);
      const moving = v.targetModelId && v.targetModelId !== v.activeModelId;
      card.appendChild(
        el(
          'div',
          'kserve-mesh-details',
          `→ ${v.activeModelId || '(none)'}` + (moving ? `, moving to ${v.targetModelId}` : '')
        )
      );
      list.appendChild(card);
    }
    if (!vmodels.length) {
      list.appendChild(el('div', 'kserve-mesh-empty', 'No vmodels.'));
    }
    this._vmodels.replaceChildren(list);
  }

  private _overview: IOverview | null = null;
  private _timer: number | null = null;
  private _url = el('div', 'kserve-mesh-url');
  private _capacityUsed = el('div', 'kserve-mesh-capacity-used');
  private _capacityText = el('div', 'kserve-mesh-capacity-text');
  private _connError = el('div', 'kserve-mesh-conn-error');
  private _message = el('div', 'kserve-mesh-message');
  private _models = el('div', 'kserve-mesh-models-box');
  private _vmodels = el('div', 'kserve-mesh-vmodels-box');
}
