// The test pane (a main-area tab): pick a model or vmodel, give inputs as JSON or in a small table
// editor, run, and see the outputs with the latency; the mesh's errors in full.
import { Widget } from '@lumino/widgets';

import { IInferResult, ITensor, MeshError, el, postJSON, requestAPI } from './api';

export interface IModelLister {
  names(): string[];
}

export class MeshTestPane extends Widget {
  constructor(private lister: IModelLister) {
    super();
    this.addClass('kserve-mesh-test-pane');
    this.build();
  }

  /** Select ``model`` (adding it to the list when the last refresh did not know it yet). */
  setModel(model: string): void {
    this.fillModels(model);
    this._model.value = model;
  }

  private build(): void {
    const root = this.node;
    root.appendChild(el('h2', 'kserve-mesh-heading', 'Test a model'));
    const top = el('div', 'kserve-mesh-test-top');
    const label = el('label', 'kserve-mesh-field');
    label.appendChild(el('span', '', 'Model'));
    label.appendChild(this._model);
    this._model.onfocus = () => this.fillModels(this._model.value);
    top.appendChild(label);
    const example = el('button', 'jp-Button jp-mod-styled jp-mod-reject kserve-mesh-example', 'Example input');
    example.title = 'A request shaped from the model’s metadata';
    example.onclick = () => void this.loadExample();
    top.appendChild(example);
    const mode = el('button', 'jp-Button jp-mod-styled jp-mod-reject kserve-mesh-mode', 'Table editor');
    mode.onclick = () => this.toggleMode(mode);
    top.appendChild(mode);
    root.appendChild(top);

    root.appendChild(
      el(
        'div',
        'kserve-mesh-hint',
        'Inputs: a V2 request ({"inputs": [{"name", "shape", "datatype", "data"}]}), a list of rows, ' +
          'or {"input name": rows}.'
      )
    );
    this._input.spellcheck = false;
    this._input.rows = 10;
    this._input.value = '{"inputs": []}';
    root.appendChild(this._input);
    this._table.hidden = true;
    root.appendChild(this._table);

    const run = el('button', 'jp-Button jp-mod-styled jp-mod-accept kserve-mesh-run', 'Run');
    run.onclick = () => void this.run(run);
    root.appendChild(run);
    root.appendChild(this._latency);
    this._error.hidden = true;
    root.appendChild(this._error);
    root.appendChild(this._outputs);
  }

  private fillModels(keep: string): void {
    const names = new Set(this.lister.names());
    if (keep) {
      names.add(keep);
    }
    const sorted = [...names].sort();
    const current = [...this._model.options].map(o => o.value);
    if (sorted.join('\n') !== current.join('\n')) {
      this._model.replaceChildren(...sorted.map(n => el('option', '', n, { value: n })));
      this._model.value = keep;
    }
  }

  private async loadExample(): Promise<void> {
    const model = this._model.value;
    this.showError('');
    try {
      const request = await requestAPI<{ inputs: ITensor[] }>(`models/${encodeURIComponent(model)}/example`);
      this._input.value = JSON.stringify(request, null, 2);
      if (!this._table.hidden) {
        this.buildTable(request.inputs);
      }
    } catch (error) {
      this.showError(`Example for '${model}' failed: ${(error as Error).message}`);
    }
  }

  private toggleMode(button: HTMLButtonElement): void {
    this.showError('');
    if (this._table.hidden) {
      let tensors: ITensor[];
      try {
        tensors = toTensors(JSON.parse(this._input.value));
      } catch (error) {
        this.showError(`The table editor needs a V2 request in the JSON box: ${(error as Error).message}`);
        return;
      }
      this.buildTable(tensors);
      this._table.hidden = false;
      this._input.hidden = true;
      button.textContent = 'JSON editor';
    } else {
      this._input.value = JSON.stringify({ inputs: this.tableTensors() }, null, 2);
      this._table.hidden = true;
      this._input.hidden = false;
      button.textContent = 'Table editor';
    }
  }

  /** One grid per input: rows x columns of a 2-D (or 1-D) tensor, cells as text. */
  private buildTable(tensors: ITensor[]): void {
    this._table.replaceChildren();
    this._tensors = tensors.map(t => ({ ...t }));
    for (const t of this._tensors) {
      const shape = t.shape && t.shape.length ? t.shape : [(t.data || []).length];
      const cols = shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1;
      const data = (t.data || []).flat(Infinity) as unknown[];
      const rows = Math.max(1, Math.ceil(data.length / cols));
      const box = el('div', 'kserve-mesh-table-input', '', { 'data-input': t.name });
      box.appendChild(el('div', 'kserve-mesh-table-title', `${t.name} (${t.datatype || ''})`));
      const table = el('table', 'kserve-mesh-grid');
      for (let r = 0; r < rows; r++) {
        const tr = el('tr');
        for (let c = 0; c < cols; c++) {
          const value = data[r * cols + c];
          const input = el('input', 'kserve-mesh-cell', '', { 'data-row': String(r), 'data-col': String(c) });
          input.value = value === undefined ? '' : String(value);
          tr.appendChild(el('td')).appendChild(input);
        }
        table.appendChild(tr);
      }
      box.appendChild(table);
      const add = el('button', 'jp-Button jp-mod-styled jp-mod-reject kserve-mesh-add-row', 'Add row');
      add.onclick = () => {
        const tr = el('tr');
        const r = table.rows.length;
        for (let c = 0; c < cols; c++) {
          tr.appendChild(el('td')).appendChild(
            el('input', 'kserve-mesh-cell', '', { 'data-row': String(r), 'data-col': String(c) })
          );
        }
        table.appendChild(tr);
      };
      box.appendChild(add);
      this._table.appendChild(box);
    }
  }

  private tableTensors(): ITensor[] {
    const boxes = [...this._table.querySelectorAll<HTMLElement>('.kserve-mesh-table-input')];
    return boxes.map((box, i) => {
      const t = this._tensors[i];
      const rows = [...box.querySelectorAll('tr')].map(tr =>
        [...tr.querySelectorAll<HTMLInputElement>('input.kserve-mesh-cell')].map(c => c.value.trim())
      );
      const filled = rows.filter(r => r.some(v => v !== ''));
      const bytes = t.datatype === 'BYTES';
      const data = filled.flat().map(v => (bytes ? v : v === 'true' ? true : v === 'false' ? false : Number(v)));
      const cols = filled.length ? filled[0].length : 1;
      const shape = t.shape && t.shape.length > 1 ? [filled.length, ...t.shape.slice(1)] : [filled.length * cols];
      return { name: t.name, datatype: t.datatype, shape, data };
    });
  }

  private async run(button: HTMLButtonElement): Promise<void> {
    const model = this._model.value;
    this.showError('');
    this._latency.textContent = '';
    this._outputs.replaceChildren();
    let inputs: unknown;
    try {
      inputs = this._table.hidden ? parseInputs(this._input.value) : this.tableTensors();
    } catch (error) {
      this.showError(`The input is not valid JSON: ${(error as Error).message}`);
      return;
    }
    if (!model) {
      this.showError('Choose a model first.');
      return;
    }
    button.disabled = true;
    const started = performance.now();
    try {
      const result = await postJSON<IInferResult>(`infer/${encodeURIComponent(model)}`, { inputs });
      const total = performance.now() - started;
      this._latency.textContent =
        `${result.model}: answered in ${result.latencyMs.toFixed(1)} ms ` +
        `(mesh round trip; ${total.toFixed(1)} ms in the browser)`;
      this.renderOutputs(result.response.outputs || []);
    } catch (error) {
      const e = error as MeshError;
      this.showError(`${model}: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  private renderOutputs(outputs: ITensor[]): void {
    const table = el('table', 'kserve-mesh-outputs');
    const head = el('tr');
    for (const h of ['Output', 'Datatype', 'Shape', 'Data']) {
      head.appendChild(el('th', '', h));
    }
    table.appendChild(el('thead')).appendChild(head);
    const body = table.appendChild(el('tbody'));
    for (const o of outputs) {
      const row = el('tr', 'kserve-mesh-output', '', { 'data-output': o.name });
      row.appendChild(el('td', '', o.name));
      row.appendChild(el('td', '', o.datatype || ''));
      row.appendChild(el('td', '', JSON.stringify(o.shape || [])));
      row.appendChild(el('td', 'kserve-mesh-output-data', JSON.stringify(o.data ?? [])));
      body.appendChild(row);
    }
    this._outputs.replaceChildren(table);
  }

  private showError(text: string): void {
    this._error.textContent = text;
    this._error.hidden = !text;
  }

  private _model = el('select', 'jp-mod-styled kserve-mesh-test-model');
  private _input = el('textarea', 'jp-mod-styled kserve-mesh-input');
  private _table = el('div', 'kserve-mesh-table-editor');
  private _tensors: ITensor[] = [];
  private _latency = el('div', 'kserve-mesh-latency');
  private _error = el('div', 'kserve-mesh-error');
  private _outputs = el('div', 'kserve-mesh-outputs-box');
}

/** The JSON box's value as what the server extension takes: a V2 request's inputs, or values. */
export function parseInputs(text: string): unknown {
  const doc = JSON.parse(text);
  if (doc && typeof doc === 'object' && !Array.isArray(doc) && Array.isArray(doc.inputs)) {
    return doc.inputs;
  }
  return doc;
}

function toTensors(doc: any): ITensor[] {
  if (doc && Array.isArray(doc.inputs) && doc.inputs.every((t: any) => t && typeof t.name === 'string')) {
    return doc.inputs as ITensor[];
  }
  throw new Error('expected {"inputs": [{"name", "shape", "datatype", "data"}]} (use "Example input")');
}
