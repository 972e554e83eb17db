// kserve-mesh's JupyterLab extension: the "Model Mesh" sidebar, "Deploy to mesh" on model files in
// the file browser, "Apply InferenceService YAML" from an open editor and the test pane. Every call
// goes through the kserve-mesh server extension, which holds the mesh's URL and credentials.
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, MainAreaWidget, Notification, showDialog } from '@jupyterlab/apputils';
import { IDocumentWidget } from '@jupyterlab/docregistry';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import {
  IDeployResult,
  MODEL_EXTENSIONS,
  MODEL_TYPES,
  el,
  extensionOf,
  postJSON
} from './api';
import { MeshSidebar } from './sidebar';
import { MeshTestPane } from './testpane';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><circle cx="5" cy="5" r="3"/><circle cx="19" cy="5" r="3"/>
<circle cx="12" cy="19" r="3"/><path d="M5 5l14 0M5 5l7 14M19 5l-7 14" stroke="#616161" stroke-width="1.6" fill="none"/></g></svg>`;

export const meshIcon = new LabIcon({ name: 'kserve-mesh:icon', svgstr: ICON_SVG });

namespace CommandIDs {
  export const open = 'kserve-mesh:open';
  export const deploy = 'kserve-mesh:deploy';
  export const applyYaml = 'kserve-mesh:apply-yaml';
  export const test = 'kserve-mesh:test';
}

/** The "Deploy to mesh" dialog body: model id, type and the file it deploys. */
class DeployForm extends Widget {
  constructor(path: string) {
    super();
    this.addClass('kserve-mesh-deploy-form');
    const name = path.split('/').pop() || path;
    const ext = extensionOf(name);
    const stem = ext ? name.slice(0, -ext.length) : name;
    this.idInput.value = stem.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '') || 'model';
    for (const t of MODEL_TYPES) {
      this.type.appendChild(el('option', '', t, { value: t }));
    }
    this.type.value = MODEL_EXTENSIONS[ext] || 'sklearn';
    this.node.appendChild(el('div', 'kserve-mesh-deploy-path', path));
    for (const [label, input] of [
      ["Model id", this.idInput],
      ['Type', this.type]
    ] as [string, HTMLElement][]) {
      const row = el('label', 'kserve-mesh-field');
      row.appendChild(el('span', '', label));
      row.appendChild(input);
      this.node.appendChild(row);
    }
  }

  getValue(): { modelId: string; type: string } {
    return { modelId: this.idInput.value.trim(), type: this.type.value };
  }

  readonly idInput = el('input', 'jp-mod-styled kserve-mesh-deploy-id');
  readonly type = el('select', 'jp-mod-styled kserve-mesh-deploy-type');
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'kserve-mesh-jupyterlab:plugin',
  description: 'Model Mesh sidebar, Deploy to mesh, InferenceService YAML apply and a test pane for kserve-mesh.',
  autoStart: true,
  requires: [IFileBrowserFactory],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    browsers: IFileBrowserFactory,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const { commands, shell } = app;
    let testPane: MainAreaWidget<MeshTestPane> | null = null;

    const openTest = (model: string) => {
      if (!testPane || testPane.isDisposed) {
        const content = new MeshTestPane({
          names: () => {
            const o = sidebar.overview;
            return o ? [...o.models.map(m => m.modelId), ...o.vmodels.map(v => v.vModelId)] : [];
          }
        });
        testPane = new MainAreaWidget({ content });
        testPane.id = 'kserve-mesh-test';
        testPane.title.label = 'Mesh test';
        testPane.title.icon = meshIcon;
        testPane.title.closable = true;
      }
      if (!testPane.isAttached) {
        shell.add(testPane, 'main');
      }
      if (model) {
        testPane.content.setModel(model);
      }
      shell.activateById(testPane.id);
    };

    const sidebar = new MeshSidebar({
      openTest,
      applyYaml: () => void commands.execute(CommandIDs.applyYaml)
    });
    sidebar.title.icon = meshIcon;
    shell.add(sidebar, 'left', { rank: 900 });
    if (restorer) {
      restorer.add(sidebar, 'kserve-mesh-sidebar');
    }

    const selectedFile = (): string | null => {
      const browser = browsers.tracker.currentWidget;
      if (!browser) {
        return null;
      }
      const item = browser.selectedItems().next();
      if (!item || item.done || !item.value || item.value.type === 'directory') {
        return null;
      }
      return item.value.path;
    };

    commands.addCommand(CommandIDs.open, {
      label: 'Show the Model Mesh sidebar',
      execute: () => shell.activateById(sidebar.id)
    });

    commands.addCommand(CommandIDs.deploy, {
      label: 'Deploy to mesh',
      caption: 'Register this model file with the mesh and load it',
      icon: meshIcon,
      isVisible: () => {
        const path = selectedFile();
        return !!path && extensionOf(path) in MODEL_EXTENSIONS;
      },
      execute: async args => {
        const path = (args.path as string) || selectedFile();
        if (!path) {
          return;
        }
        const form = new DeployForm(path);
        const choice = await showDialog({
          title: 'Deploy to mesh',
          body: form,
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Deploy' })],
          focusNodeSelector: 'input'
        });
        if (!choice.button.accept) {
          return;
        }
        const { modelId, type } = form.getValue();
        shell.activateById(sidebar.id);
        sidebar.showMessage(`Deploying '${modelId}' (${type}) from ${path}…`, 'info');
        try {
          const result = await postJSON<IDeployResult>('deploy', { path, modelId, type });
          sidebar.showMessage(`deployed '${result.modelId}' (${result.type}): ${result.status.status}`, 'ok');
          Notification.success(`Deployed '${result.modelId}' to the mesh`, { autoClose: 3000 });
        } catch (error) {
          sidebar.showMessage(`Deploy of ${path} as '${modelId}' failed: ${(error as Error).message}`, 'error');
          Notification.error(`Deploy of '${modelId}' failed (see the Model Mesh sidebar)`, { autoClose: 5000 });
        }
        await sidebar.refresh();
      }
    });

    commands.addCommand(CommandIDs.applyYaml, {
      label: 'Apply InferenceService YAML to the mesh',
      caption: 'Apply the YAML of the open editor (InferenceService and related objects)',
      icon: meshIcon,
      execute: async () => {
        const widget = shell.currentWidget as IDocumentWidget | null;
        shell.activateById(sidebar.id);
        if (!widget || !(widget as any).context || !(widget as any).context.model) {
          sidebar.showMessage('Open the InferenceService YAML in an editor first.', 'error');
          return;
        }
        const path = widget.context.path;
        try {
          const result = await postJSON<{ items: { kind?: string; namespace?: string; name?: string; action?: string }[] }>(
            'apply',
            { yaml: widget.context.model.toString() }
          );
          const done = result.items.map(i => `${i.kind} ${i.namespace}/${i.name} ${i.action}`).join(', ');
          sidebar.showMessage(`applied ${path}: ${done || 'nothing to do'}`, 'ok');
        } catch (error) {
          sidebar.showMessage(`Apply of ${path} failed: ${(error as Error).message}`, 'error');
        }
        await sidebar.refresh();
      }
    });

    commands.addCommand(CommandIDs.test, {
      label: 'Open the mesh test pane',
      icon: meshIcon,
      execute: args => openTest((args.model as string) || '')
    });

    app.contextMenu.addItem({
      command: CommandIDs.deploy,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 3
    });
    app.contextMenu.addItem({ command: CommandIDs.applyYaml, selector: '.jp-FileEditor', rank: 50 });
    if (palette) {
      for (const command of [CommandIDs.open, CommandIDs.applyYaml, CommandIDs.test]) {
        palette.addItem({ command, category: 'Model Mesh' });
      }
    }
  }
};

export default plugin;
